"""TransSTResult: AnnData keys, save/load round trip without pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest

import transst_bayes as tb
from transst_bayes.result import _jsonable


@pytest.fixture(scope="module")
def fitted(small_pair):
    src, tgt = small_pair
    return tgt, tb.fit_em(tgt, src, n_domains=[2, 3], n_factors=5, graph="st", n_restarts=1)


def test_to_anndata_writes_documented_keys(fitted):
    tgt, res = fitted
    a = res.to_anndata(tgt, key_added="dom", copy=True)
    assert "dom" not in tgt.obs  # copy=True leaves the input alone
    K = res.n_domains
    assert list(a.obs["dom"].cat.categories) == res.names and len(res.names) == K
    np.testing.assert_array_equal(a.obs["dom"].cat.codes.to_numpy(), res.labels)
    np.testing.assert_allclose(a.obs["dom_maxprob"], res.maxprob)
    np.testing.assert_allclose(a.obs["dom_entropy"], res.entropy)
    assert a.obsm["dom_proba"].shape == (tgt.n_obs, K)
    assert a.obsm["X_dom"].shape == (tgt.n_obs, 5)
    load = a.varm["dom_loadings"]
    assert load.shape == (tgt.n_vars, 5) and np.isfinite(load).all()
    u = a.uns["dom"]
    assert u["beta"] == pytest.approx(res.beta) and u["seed"] == 0
    assert [r["K"] for r in json.loads(u["k_table"])] == [2, 3]
    assert len(a.uns["dom_colors"]) == K


def test_uns_holds_each_value_once_and_rebuilds_the_fit(fitted, tmp_path):
    """Issue 14: to_anndata wrote settings, beta, tau, kappa, the K table, genes, seed, version,
    temperature and calibration twice into uns (readable entries and the JSON meta)."""
    import anndata as ad

    tgt, res = fitted
    res.info["temperature"], res.info["calibration"] = 2.5, "given"
    a = res.to_anndata(tgt, copy=True)
    u = a.uns["transst"]
    # the entries of uns[key], of its JSON meta and of meta's info: no name twice (the settings
    # hold what was asked, their beta the starting value: not compared with the fitted beta)
    meta = json.loads(u["meta"])
    names = [k for k in u if k != "fit"] + list(meta) + list(meta.get("info", {}))
    twice = sorted({n for n in names if names.count(n) > 1})
    twice += sorted(n for n in ("seed", "version") if n in json.loads(u["settings"]))
    assert not twice, f"written more than once into uns: {twice}"
    a.write_h5ad(tmp_path / "a.h5ad")
    back = tb.TransSTResult.from_anndata(ad.read_h5ad(tmp_path / "a.h5ad"))
    for name in ("labels", "proba", "factors", "W_t", "W_s", "psi", "mu", "Sigma", "trace"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert (back.beta, back.tau, back.kappa) == (res.beta, res.tau, res.kappa)
    assert back.k_table == res.k_table and back.genes == res.genes and back.names == res.names
    same = lambda d: json.dumps(d, sort_keys=True, default=_jsonable)  # noqa: E731 (NaN == NaN)
    assert same(back.settings) == same(res.settings) and same(back.info) == same(res.info)


def test_to_anndata_rejects_other_spots(fitted, small_pair):
    tgt, res = fitted
    with pytest.raises(ValueError, match="do not match"):
        res.to_anndata(tgt[:10].copy())


def test_save_load_round_trip(fitted, tmp_path):
    _, res = fitted
    path = tmp_path / "fit.npz"
    res.save(path)
    with np.load(path, allow_pickle=False) as f:  # readable without pickle
        assert "labels" in f.files
    back = tb.load_result(path)
    for name in ("labels", "proba", "factors", "W_t", "W_s", "psi", "mu", "Sigma", "trace"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.beta == res.beta and back.tau == res.tau
    assert back.k_table == res.k_table and back.genes == res.genes
    assert back.settings == res.settings


def test_each_field_has_one_name_documented_once_and_replace_copies(fitted):
    """Each result field has one name (no second, grouped copy of it), the class docstring
    documents exactly those fields, and `replace` copies with some changed and refuses a name
    that is not a field."""
    import dataclasses
    import re

    _, res = fitted
    names = [f.name for f in dataclasses.fields(tb.TransSTResult)]
    doc = tb.TransSTResult.__doc__
    params = doc[doc.index("Parameters\n"):doc.index("Attributes\n")]
    documented = re.findall(r"^    (\w+) :", params, flags=re.M)
    assert sorted(documented) == sorted(names)
    for group in ("spots", "target", "source", "data", "diagnostics", "flat", "from_flat"):
        assert not hasattr(res, group), group
    assert res.spot_loglik is None and res.posterior is None  # EM: no draws
    assert res.W_s.shape == res.W_t.shape and len(res.source_classes) == res.mu_s.shape[0]
    changed = res.replace(beta=123.0)
    assert changed.beta == 123.0 and res.beta != 123.0
    assert changed.labels is res.labels and changed.info is res.info
    changed.proba = changed.proba * 0.5
    assert res.proba.max() > changed.proba.max()
    with pytest.raises(TypeError, match="no fields"):
        res.replace(colour="red")
