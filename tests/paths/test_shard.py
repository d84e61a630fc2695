"""Spots over several devices (transst_bayes.shard): the same fit as on one device.

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
