"""Scanpy-style API (transst_bayes.tl / .pp): documented keys, copy semantics, round trips."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import transst_bayes as tb

from conftest import ari

FAST = dict(n_factors=4, n_restarts=1)
KEY_OBS = {"dom", "dom_maxprob", "dom_entropy"}
KEY_OBSM = {"dom_proba", "X_dom"}


@pytest.fixture(scope="module")
def pair():
    src, tgt = tb.simulate(0, height=14, width=14, n_genes=80, n_factors=4, n_domains=3)
    tgt.uns.pop("simulation")
    return src, tgt


def _keys(a):
    return (set(a.obs.columns), set(a.obsm.keys()), set(a.varm.keys()), set(a.uns.keys()),
            set(a.var.columns), set(a.obsp.keys()), set(a.layers.keys()))


@pytest.mark.slow
def test_transst_writes_exactly_the_documented_keys(pair):
    src, tgt = pair
    before = _keys(tgt)
    out = tb.tl.transst(tgt, src, n_domains=range(2, 5), key_added="dom", copy=True, **FAST)
    assert _keys(tgt) == before and "dom" not in tgt.obs  # copy=True: input untouched
    obs, obsm, varm, uns, var, obsp, layers = _keys(out)
    assert obs - before[0] == KEY_OBS
    assert obsm - before[1] == KEY_OBSM
    assert varm - before[2] == {"dom_loadings"}
    assert uns - before[3] == {"dom", "dom_colors"}
    assert (var, obsp, layers) == before[4:]
    K = out.uns["dom"]["n_domains"]
    assert K in (2, 3, 4) and len(out.uns["dom_colors"]) == K
    # anchored domains carry the names of the source classes they are tied to
    cats = list(out.obs["dom"].cat.categories)
    assert len(cats) == K and set(cats) <= set(src.obs["label"].astype(str))
    assert list(map(str, out.uns["dom"]["domain_names"])) == cats
    assert out.obsm["dom_proba"].shape == (out.n_obs, K)
    np.testing.assert_allclose(out.obsm["dom_proba"].sum(1), 1.0, atol=1e-4)
    assert {"settings", "beta", "tau", "kappa", "k_table", "version", "seed", "fit", "meta"} <= set(out.uns["dom"])
    assert ari(out.obs["dom"].astype(str), tgt.obs["truth"]) > 0.8
    # copy=False: in place, returns None, same answer
    t2 = tgt.copy()
    assert tb.tl.transst(t2, src, n_domains=range(2, 5), key_added="dom", **FAST) is None
    np.testing.assert_array_equal(t2.obs["dom"].to_numpy(), out.obs["dom"].to_numpy())


def test_rng_forms_and_determinism(pair):
    src, tgt = pair
    import jax

    a = tb.tl.transst(tgt, src, n_domains=3, rng=5, copy=True, **FAST)
    b = tb.tl.transst(tgt, src, n_domains=3, rng=5, copy=True, **FAST)
    np.testing.assert_array_equal(a.obs["transst"].to_numpy(), b.obs["transst"].to_numpy())
    assert a.uns["transst"]["seed"] == 5
    truth = tgt.obs["truth"].astype(str).to_numpy()
    seeds = {"generator": int(np.random.default_rng(1).integers(0, 2**31 - 1)), "old key": 3,
             "typed key": 3, "none": 0}  # what each form of rng becomes
    for (form, seed), rng in zip(seeds.items(), (np.random.default_rng(1), jax.random.PRNGKey(3),
                                                 jax.random.key(3), None)):
        c = tb.tl.transst(tgt, src, n_domains=3, rng=rng, copy=True, **FAST)
        assert c.uns["transst"]["seed"] == seed, form
        # every form fits: the domains are found (ARI 0.985 measured with each of the four)
        assert tb.adjusted_rand_index(c.obs["transst"].astype(str).to_numpy(), truth) >= 0.8, form
    with pytest.raises(TypeError, match="rng"):
        tb.tl.transst(tgt, src, n_domains=3, rng="seven", copy=True, **FAST)


def test_markers_and_breaking_genes_after_h5ad_round_trip(pair, tmp_path):
    src, tgt = pair
    a = tb.tl.transst(tgt, src, n_domains=3, copy=True, **FAST)
    a.write_h5ad(tmp_path / "a.h5ad")
    b = ad.read_h5ad(tmp_path / "a.h5ad")
    res = tb.TransSTResult.from_anndata(b)
    np.testing.assert_array_equal(res.labels, a.obs["transst"].cat.codes.to_numpy())
    np.testing.assert_allclose(res.W_t, b.varm["transst_loadings"], rtol=1e-6)
    before = set(b.uns) | set(b.var.columns)
    c = tb.tl.markers(b, n_top=5, copy=True)
    assert set(b.uns) | set(b.var.columns) == before  # copy=True leaves b alone
    table = c.uns["transst_markers"]
    assert len(table) == 5 * 3 and set(table["domain"]) == set(res.names)
    assert (table["ci_low"] <= table["contrast"]).all() and (table["contrast"] <= table["ci_high"]).all()
    # the top marker of each domain is indeed most expressed there among the domains
    e = tb.domain_expression(res).mean(0)
    gi = {g: i for i, g in enumerate(res.genes)}
    for k, grp in table.groupby("domain"):
        assert res.names[int(np.argmax(e[gi[grp["gene"].iloc[0]]]))] == k
    assert tb.tl.transfer_breaking_genes(b, key_added="tb") is None
    assert "tb" in b.uns and "tb" in b.var
    assert np.isfinite(b.var["tb"]).sum() == len(res.genes)
    top = b.uns["tb"]["gene"].iloc[0]
    assert b.var.loc[top, "tb"] == np.nanmax(b.var["tb"])
    c.write_h5ad(tmp_path / "c.h5ad")  # DataFrames in uns survive writing
    assert ad.read_h5ad(tmp_path / "c.h5ad").uns["transst_markers"].shape == table.shape


def test_api_errors(pair):
    src, tgt = pair
    with pytest.raises(ValueError, match="method"):
        tb.tl.transst(tgt, src, n_domains=3, method="gibbs", copy=True)
    with pytest.raises(TypeError, match="AnnData"):
        tb.tl.transst(np.zeros((5, 5)), src, n_domains=3)
    with pytest.raises(ValueError, match=r"tl\.transst"):
        tb.tl.markers(tgt.copy(), key="nothing")
    fitted = tb.tl.transst(tgt, src, n_domains=3, copy=True, **FAST)
    with pytest.raises(ValueError, match="subset or reordered"):
        tb.tl.markers(fitted[:50].copy())
    with pytest.raises(ValueError, match="label_key"):
        tb.tl.transst(tgt, src, label_key="celltype", n_domains=3, copy=True, **FAST)


@pytest.mark.slow
def test_transst_svi_method():
    # the data shapes of tests/paths/test_svi.py, so that the autoguide set-up's op-by-op
    # compilations are shared within the test session
    src, tgt = tb.simulate(3, height=20, width=20, n_genes=200, n_factors=5, n_domains=3, shift_genes=20)
    out = tb.tl.transst(tgt, src, n_domains=3, method="svi", copy=True, n_factors=5,
                        steps_per_round=50, max_rounds=2, num_samples=20)
    assert out.uns["transst"]["fit"]["posterior__mu"].shape == (20, 3, 5)  # S draws, K, q
    tb.tl.markers(out)
    assert out.uns["transst_markers"]["n_draws"].iloc[0] == 20
    assert out.uns["transst_markers"]["lfsr"].between(0, 0.5).all()


def test_pp_helpers(pair):
    src, tgt = pair
    counts = sp.csr_matrix(np.random.default_rng(0).poisson(2.0, size=(tgt.n_obs, 30)).astype(np.float32))
    a = ad.AnnData(counts, obsm={"spatial": tgt.obsm["spatial"]})
    a.var_names = [f"g{i}" for i in range(30)]
    b = tb.pp.log_normalize(a, key_added="lognorm", copy=True)
    assert "lognorm" not in a.layers and sp.issparse(b.layers["lognorm"])
    row = b.layers["lognorm"][0].toarray().ravel()
    x = counts[0].toarray().ravel()
    np.testing.assert_allclose(row, np.log1p(1e4 * x / x.sum()), rtol=1e-5)
    with pytest.raises(ValueError, match="raw counts"):
        tb.pp.log_normalize(b, layer="lognorm")
    tb.pp.select_genes(b, n_genes=10)
    sel = b.var["transst_selected"].to_numpy()
    assert sel.sum() == 10
    lv = b.layers["lognorm"].toarray().var(0)
    assert lv[sel].min() >= lv[~sel].max() - 1e-6  # the top 10 by variance
    for bad in ("dispersion", "auto", "highly_variable", "source"):  # the last three rank nothing here
        with pytest.raises(ValueError, match="method must be 'variance' or 'cv'"):
            tb.pp.select_genes(b, method=bad)
    tb.pp.spatial_neighbors(b, n_neighbors=4)
    A = b.obsp["spatial_connectivities"]
    assert (A != A.T).nnz == 0 and A.diagonal().sum() == 0 and (A.getnnz(1) >= 4).all()
    # the fit uses the stored graph as given: an ST lattice graph stored there is what it sees
    t = tgt.copy()
    tb.pp.spatial_neighbors(t, method="st")
    assert t.obsp["spatial_connectivities"].getnnz(1).max() == 4
    with pytest.raises(ValueError, match="method"):
        tb.pp.spatial_neighbors(t, method="delaunay")
