"""Spots over several devices (transst_bayes.shard): the same fit as on one device; on one
device, spots, domains and graph padded (the held-out fits): the same fit as without padding.

The multi-device checks run in a subprocess with four CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4: the device count is fixed when JAX starts).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import transst_bayes as tb
from transst_bayes import shard

CHILD = textwrap.dedent(r"""
    import json, warnings
    warnings.simplefilter("ignore")
    import numpy as np, jax
    from jax.sharding import Mesh
    import transst_bayes as tb
    from transst_bayes import shard
    assert len(jax.devices()) == 4
    src, tgt = tb.simulate(0, height=17, width=23)  # 391 spots: padded to 392 over 4 devices
    out = {"n": tgt.n_obs, "layout": list(shard.layout(tgt.n_obs, shard.mesh("all"))[1:])}

    # transfer="eb", calibrate="none": the held-out fits of the defaults (a default mode's
    # subject elsewhere) would be most of this child's time
    def compare(name, fit, **kw):
        if fit is tb.fit_em:
            kw["transfer"] = "eb"
        else:
            kw["em_options"] = dict(transfer="eb")
        a = fit(tgt, src, calibrate="none", **kw)
        b = fit(tgt, src, calibrate="none", devices="all", **kw)
        out[name] = {"labels_differ": float(np.mean(a.labels != b.labels)),
                     "obj": [float(a.trace[-1]), float(b.trace[-1])],
                     "proba": float(np.abs(a.proba - b.proba).max()),
                     "factors": float(np.abs(a.factors - b.factors).max()),
                     "n_devices": b.info.get("n_devices"), "shape": list(b.proba.shape)}

    compare("anchored64", tb.fit_em, dtype="float64", n_novel=[0, 1])
    compare("free64", tb.fit_em, n_domains=4, domains="free", dtype="float64", max_iter=30)
    compare("anchored32", tb.fit_em, n_novel=0)
    compare("svi_delta64", tb.fit_svi, guide="delta", dtype="float64", n_novel=0, steps_per_round=25,
            max_rounds=2)
    compare("svi_batch", tb.fit_svi, guide="delta", n_novel=0, batch_size=100, steps_per_round=25, max_rounds=2)
    # a list of devices and a one-axis Mesh are the same as "all"
    mesh = Mesh(np.array(jax.devices()[:2]), ("spots",))
    a = tb.fit_em(tgt, src, calibrate="none", transfer="eb", dtype="float64", n_novel=0, devices=mesh)
    b = tb.fit_em(tgt, src, calibrate="none", transfer="eb", dtype="float64", n_novel=0, devices=[0, 1])
    out["mesh_vs_list"] = float(np.mean(a.labels != b.labels))
    errors = {}
    for name, kw in {"cv": dict(devices="all", transfer="cv"),
                     "mesh2d": dict(devices=Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b")))}.items():
        try:
            tb.fit_em(tgt, src, **kw)
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    out["errors"] = errors
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_spots_are_padded_to_a_multiple_of_the_devices(four_devices):
    assert four_devices["layout"] == [391, 392]
    for name in ("anchored64", "free64", "anchored32", "svi_delta64"):
        assert four_devices[name]["n_devices"] == 4
        assert four_devices[name]["shape"][0] == 391  # padded spots dropped


@pytest.mark.slow
@pytest.mark.parametrize("name", ["anchored64", "free64"])
def test_em_over_four_devices_equals_one_device_in_float64(four_devices, name):
    r = four_devices[name]
    assert r["n_devices"] == 4
    assert r["labels_differ"] == 0.0
    a, b = r["obj"]
    assert abs(a - b) <= 1e-10 * abs(a), r["obj"]  # only the order of additions differs
    assert r["proba"] <= 1e-8 and r["factors"] <= 1e-8, r


@pytest.mark.slow
def test_default_float32_fit_over_four_devices_has_the_same_labels(four_devices):
    r = four_devices["anchored32"]
    assert r["labels_differ"] == 0.0
    a, b = r["obj"]
    assert abs(a - b) <= 1e-5 * abs(a), r["obj"]


@pytest.mark.slow
def test_svi_over_four_devices_matches_one_device(four_devices):
    # full batch: the same model (padding masked out); Adam turns the last bits of a gradient
    # near zero into whole steps, so agreement is to a tolerance, not to the bit
    r = four_devices["svi_delta64"]
    assert r["labels_differ"] == 0.0
    assert r["proba"] <= 1e-2, r
    a, b = r["obj"]
    assert abs(a - b) <= 1e-3 * abs(a), r["obj"]
    # minibatches: padding changes which spots a step draws, so the runs differ as two seeds do
    assert four_devices["svi_batch"]["labels_differ"] <= 0.05, four_devices["svi_batch"]


@pytest.mark.slow
def test_a_mesh_and_a_device_list_give_the_same_fit(four_devices):
    assert four_devices["mesh_vs_list"] == 0.0


@pytest.mark.slow
def test_unsupported_multi_device_settings_name_the_argument(four_devices):
    errors = four_devices["errors"]
    assert errors["cv"] is not None and "devices" in errors["cv"] and "transfer" in errors["cv"]
    assert errors["mesh2d"] is not None and "one axis" in errors["mesh2d"]


@pytest.mark.parametrize("devices, exc, words", [
    ("gpu", ValueError, "'all'"),
    ([], ValueError, "empty"),
    (3.5, TypeError, "devices"),
    ([99], ValueError, "out of range"),
    (["cpu"], TypeError, "jax.Device"),
])
def test_bad_devices_are_refused_before_any_work(devices, exc, words):
    src, tgt = tb.simulate(0, height=6, width=6, n_genes=30, source_height=6, source_width=6)
    with pytest.raises(exc, match="devices") as e:
        tb.fit_em(tgt, src, devices=devices)
    assert words in str(e.value)


def test_one_device_is_no_mesh_and_no_padding():
    d = jax.devices()[0]
    assert shard.mesh(None) is None and shard.mesh([0]) is None and shard.mesh([d]) is None
    if len(jax.devices()) == 1:
        assert shard.mesh("all") is None
    lay = shard.layout(10, None)
    assert lay == shard.Layout(None, 10, 10) and lay.n_devices == 1
    assert shard.weights(lay, np.float32) is None
    x = np.arange(6.0).reshape(3, 2)
    assert shard.real(x, shard.layout(3, None)) is x
    with pytest.raises(ValueError, match="more than once"):
        shard.mesh([d, d])
    with pytest.raises(ValueError, match="one axis"):
        shard.mesh(Mesh(np.array([d]).reshape(1, 1), ("a", "b")))


def test_one_device_pads_rows_where_a_fit_asks_for_them():
    lay = shard.layout(5, None, 8)
    assert lay == shard.Layout(None, 5, 8) and np.asarray(shard.weights(lay, np.float32)).tolist() == [1] * 5 + [0] * 3
    assert shard.layout(5, None, 3) == shard.Layout(None, 5, 5)  # never fewer rows than spots
    x = np.arange(10.0).reshape(5, 2)
    padded = np.asarray(shard.rows(x, lay, np.float32, fill=-1))
    assert padded.shape == (8, 2) and (padded[5:] == -1).all() and (padded[:5] == x).all()
    on_device = np.asarray(shard.rows(jax.numpy.asarray(x), lay, np.float32))
    assert on_device.shape == (8, 2) and (on_device[5:] == 0).all() and (on_device[:5] == x).all()
    assert np.array_equal(np.asarray(shard.real(padded, lay)), x)


@pytest.mark.parametrize("domains", [pytest.param("anchored", marks=pytest.mark.slow), "free"])
def test_a_fit_padded_with_zero_rows_equals_the_unpadded_fit(domains):
    """A held-out fit pads the target's and the source's spots with zero rows of weight 0
    (`spot_rows`, `source_rows`; here 221 -> 256 target and 225 -> 256 source spots) and its
    domains with columns no spot takes (`domain_rows`: K = 4 -> 6): the same labels and, up to
    float64 rounding, the same probabilities, parameters and objective as without."""
    from dataclasses import replace

    from transst_bayes.fit import held_out_fit

    src, tgt = tb.simulate(0, height=13, width=17, n_genes=100, source_height=15, source_width=15)
    em = tb.EMSettings(n_factors=6, transfer="eb", domains=domains, dtype="float64")
    plain = held_out_fit(em, tgt, src, "label", 4, {})
    padded = held_out_fit(replace(em, spot_rows=256, source_rows=256, domain_rows=6), tgt, src, "label", 4, {})
    assert np.array_equal(padded.labels, plain.labels)
    np.testing.assert_allclose(padded.proba, plain.proba, atol=1e-8)
    for name in ("W_t", "mu", "Sigma", "W_s", "mu_s", "psi_s"):
        np.testing.assert_allclose(getattr(padded, name), getattr(plain, name), rtol=1e-7, atol=1e-9, err_msg=name)
    assert padded.beta == pytest.approx(plain.beta, rel=1e-8)
    assert padded.proba.shape == plain.proba.shape == (tgt.n_obs, 4)
    a, b = padded.k_table[0], plain.k_table[0]
    assert a["loglik"] == pytest.approx(b["loglik"], rel=1e-9) and a["n_iter"] == b["n_iter"]


@pytest.mark.slow
def test_parts_of_different_sizes_padded_alike_share_their_compiled_programs():
    """Fits padded to the same rows share compiled programs: sources of 400 and 441 spots (both
    padded to 512) the source model, and with one target the transfer step and the clustering;
    targets of 391 and 300 spots (both 512) the transfer step. Unpadded, each size compiles
    its own."""
    from dataclasses import replace

    from transst_bayes.em import driver
    from transst_bayes.fit import held_out_fit

    src, tgt = tb.simulate(1, height=17, width=23, n_genes=120, source_height=20, source_width=20)
    src2, small = tb.simulate(2, height=15, width=20, n_genes=120, source_height=21, source_width=21)
    # classifier=0: one clustering program per fit (a fit that uses the classifier's term runs a second)
    em = replace(tb.EMSettings(n_factors=5, transfer="eb", classifier=0.0), spot_rows=512, source_rows=512)
    held_out_fit(em, tgt, src, "label", 3, {})
    size = lambda: [f._cache_size() for f in (driver._fit_source, driver._fit_transfer, driver._run)]  # noqa: E731
    before = size()
    held_out_fit(em, tgt, src2, "label", 3, {})
    assert size() == before
    held_out_fit(em, small, src2, "label", 3, {})
    assert size()[:2] == before[:2]
    # domains padded to 4 columns: K = 3 and K = 4 share one clustering program
    held_out_fit(replace(em, domain_rows=4), tgt, src, "label", 3, {})
    runs = driver._run._cache_size()
    held_out_fit(replace(em, domain_rows=4), tgt, src, "label", 4, {})
    assert driver._run._cache_size() == runs
    held_out_fit(replace(em, spot_rows=0, source_rows=0), tgt, src2, "label", 3, {})  # unpadded: new ones
    assert all(a > b for a, b in zip(size(), before))


@pytest.mark.slow
def test_a_default_calls_held_out_fits_share_compiled_programs():
    """The default call's held-out fits (three source sections of 144, 126 and 126 spots, each
    fitted with and without the source) are padded alike: the source model compiles at most
    twice (held-out fits, target), the transfer step three times (with / without the source,
    the target) and the clustering five (with the source: with / without the classifier's
    term, without it, the target's two); fitted at their own sizes they compiled 3, 5 and 8."""
    from transst_bayes.em import driver

    src, tgt = tb.simulate(3, height=16, width=16, n_genes=120, n_factors=5, source_height=18, source_width=22,
                           source_sections=3)
    assert sorted(src.obs["section"].value_counts()) == [126, 126, 144]
    programs = (driver._fit_source, driver._fit_transfer, driver._run)
    before = [f._cache_size() for f in programs]
    res = tb.fit_em(tgt, src, n_domains=4, n_factors=5)
    assert "held-out source sections" in res.info["calibration"]
    new = [f._cache_size() - b for f, b in zip(programs, before)]
    assert new[0] <= 2 and new[1] <= 3 and new[2] <= 5, new
