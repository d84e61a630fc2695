"""The data boundary: counts detection, normalisation, genes, standardisation, sparse input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import transst_bayes as tb
from transst_bayes.data import DataSettings, prepare


def _counts_pair(seed=0, n=60, ns=80, p=50, shared=40):
    rng = np.random.default_rng(seed)
    Xt = rng.poisson(rng.gamma(2.0, 2.0, size=(n, p))).astype(np.float32)
    Xs = rng.poisson(rng.gamma(2.0, 2.0, size=(ns, p))).astype(np.float32)
    genes_t = [f"g{i}" for i in range(p)]
    genes_s = [f"g{i}" for i in range(p - shared, 2 * p - shared)][::-1]  # other order
    t = ad.AnnData(Xt, var=pd.DataFrame(index=genes_t), obs=pd.DataFrame(index=[f"t{i}" for i in range(n)]))
    t.obsm["spatial"] = rng.uniform(size=(n, 2))
    s = ad.AnnData(Xs, var=pd.DataFrame(index=genes_s), obs=pd.DataFrame(
        {"label": pd.Categorical(rng.choice(["a", "b", "c"], ns))}, index=[f"s{i}" for i in range(ns)]))
    return t, s


def test_counts_are_normalised_and_genes_intersected():
    t, s = _counts_pair()
    prep = prepare(t, s, "label", DataSettings())
    assert len(prep.genes) == 40 and set(prep.genes) == {f"g{i}" for i in range(10, 50)}
    assert prep.X.dtype == np.float32 and prep.X.shape == (60, 40)
    # pooled standardisation: mean 0, sd 1 over source + target together
    allx = np.vstack([prep.X, prep.X_source]).astype(np.float64)
    np.testing.assert_allclose(allx.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(allx.std(0), 1, atol=1e-4)
    # the same gene in both: source columns follow the target's gene order
    g = prep.genes.index("g20")
    raw_t = t[:, "g20"].X.ravel()
    lib = t.X.sum(1)
    expect = np.log1p(raw_t / lib * 1e4)
    r = np.corrcoef(expect, prep.X[:, g])[0, 1]
    assert r > 0.9999
    raw_s = s[:, "g20"].X.ravel()
    expect_s = np.log1p(raw_s / s.X.sum(1) * 1e4)
    assert np.corrcoef(expect_s, prep.X_source[:, g])[0, 1] > 0.9999


def test_sparse_equals_dense_and_layer():
    t, s = _counts_pair(1)
    dense = prepare(t, s, "label", DataSettings())
    t2, s2 = t.copy(), s.copy()
    t2.layers["counts"] = sp.csr_matrix(t2.X)
    t2.X = np.zeros_like(t2.X)
    s2.layers["counts"] = sp.csr_matrix(s2.X)
    sparse = prepare(t2, s2, "label", DataSettings(layer="counts"))
    np.testing.assert_allclose(dense.X, sparse.X, atol=1e-5)
    np.testing.assert_allclose(dense.X_source, sparse.X_source, atol=1e-5)


def test_log_normalised_input_is_detected_and_override():
    t, s = _counts_pair(2)
    logt, logs = t.copy(), s.copy()
    logt.X = np.log1p(t.X / t.X.sum(1, keepdims=True) * 1e4)
    logs.X = np.log1p(s.X / s.X.sum(1, keepdims=True) * 1e4)
    a = prepare(t, s, "label", DataSettings())
    b = prepare(logt, logs, "label", DataSettings())
    np.testing.assert_allclose(a.X, b.X, atol=1e-4)
    c = prepare(t, s, "label", DataSettings(counts=False))  # raw values used as they are
    assert not np.allclose(a.X, c.X, atol=1e-2)


def test_gene_selection_variance_cv_and_list():
    t, s = _counts_pair(3)
    v = prepare(t, s, "label", DataSettings(n_genes=10))
    c = prepare(t, s, "label", DataSettings(n_genes=10, genes="cv"))
    assert len(v.genes) == len(c.genes) == 10
    logt = np.log1p(t.X / t.X.sum(1, keepdims=True) * 1e4)
    var = pd.Series(logt.var(0), index=t.var_names)[[f"g{i}" for i in range(10, 50)]]
    assert set(v.genes) == set(var.sort_values(ascending=False).index[:10])
    lst = prepare(t, s, "label", DataSettings(genes=("g12", "g30", "g31")))
    assert lst.genes == ["g12", "g30", "g31"]
    with pytest.raises(ValueError, match="not shared"):
        prepare(t, s, "label", DataSettings(genes=("g1", "g30")))


def test_separate_standardisation_per_source_batch():
    t, s = _counts_pair(4)
    s.obs["batch"] = np.repeat(["x", "y"], 40)
    prep = prepare(t, s, "label", DataSettings(standardize="separate", source_batch_key="batch"))
    for b in ("x", "y"):
        rows = (s.obs["batch"] == b).to_numpy()
        np.testing.assert_allclose(prep.X_source[rows].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(prep.X.mean(0), 0, atol=1e-5)


def test_existing_graph_used_as_given():
    t, s = _counts_pair(5)
    A = sp.diags([np.ones(59), np.ones(59)], [1, -1], shape=(60, 60), format="csr")
    t.obsp["spatial_connectivities"] = A
    prep = prepare(t, s, "label", DataSettings())
    assert (prep.adjacency != A).nnz == 0


def test_rarely_detected_genes_are_not_selected_and_values_are_clipped():
    """A gene non-zero in a handful of spots is an outlier column after standardisation (the
    Heywood trigger of test_fit.py::test_rare_genes_do_not_collapse_the_fit): not selected
    unless listed; standardised values are clipped to +-MAX_Z."""
    from transst_bayes.data import MAX_Z

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 20)).astype(np.float32) + 5.0
    X[:, 0] = 0.0
    X[:4, 0] = 50.0  # detected in 4 of 500 spots
    X[:, 1] = 0.0
    X[:30, 1] = 1.0  # detected in 30 spots (6%): kept
    a = ad.AnnData(X, var=pd.DataFrame(index=[f"g{i}" for i in range(20)]))
    a.obsm["spatial"] = rng.uniform(size=(500, 2))
    prep = prepare(a, settings=DataSettings(counts=False))
    assert "g0" not in prep.genes and "g1" in prep.genes and len(prep.genes) == 19
    listed = prepare(a, settings=DataSettings(counts=False, genes=("g0", "g2")))
    assert listed.genes == ["g0", "g2"]
    assert np.abs(listed.X).max() == pytest.approx(MAX_Z)  # 4 spots at 11 sd, clipped


def test_simulate_sections_section_effect_and_mixing():
    src, tgt = tb.simulate(0, height=6, width=6, n_genes=30, n_factors=3, n_domains=2,
                           source_height=6, source_width=9, source_sections=3)
    assert list(src.obs["section"].value_counts().sort_index()) == [18, 18, 18]
    base_s, base_t = tb.simulate(0, height=6, width=6, n_genes=30, n_factors=3, n_domains=2)
    # a section effect shifts every gene of a section by one offset: within-section differences
    # between two spots are unchanged
    s2, t2 = tb.simulate(0, height=6, width=6, n_genes=30, n_factors=3, n_domains=2,
                         source_sections=2, section_effect=1.0)
    d = np.asarray(s2.X) - np.asarray(base_s.X)
    sec = s2.obs["section"].to_numpy()
    for v in np.unique(sec):
        np.testing.assert_allclose(d[sec == v], np.broadcast_to(d[sec == v][0], d[sec == v].shape), atol=1e-5)
    assert not np.allclose(d[sec == "section0"][0], d[sec == "section1"][0])
    m_s, m_t = tb.simulate(0, height=6, width=6, n_genes=30, n_factors=3, n_domains=2, mixing=0.5)
    assert not np.allclose(np.asarray(m_t.X), np.asarray(base_t.X))
    np.testing.assert_array_equal(m_t.obs["truth"], base_t.obs["truth"])
    for bad in (dict(source_sections=0), dict(mixing=1.5), dict(section_effect=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tb.simulate(0, height=6, width=6, n_genes=30, n_factors=3, n_domains=2, **bad)


@pytest.mark.parametrize("standardize", ["pooled", "separate"])
def test_prepare_leaves_the_callers_matrices_as_they_were(standardize):
    """prepare reads log-normalised input in place when every target gene is shared (issue 15: no
    copy of the full matrix), so it must never write into it: the AnnData's X is unchanged and
    the prepared arrays do not share its memory."""
    t, s = _counts_pair(3, shared=50)
    t.X = np.log1p(t.X).astype(np.float32)  # log-normalised: read as given
    s.X = np.log1p(s.X).astype(np.float32)
    before_t, before_s = t.X.copy(), s.X.copy()
    prep = prepare(t, s, "label", DataSettings(standardize=standardize, counts=False))
    np.testing.assert_array_equal(t.X, before_t)
    np.testing.assert_array_equal(s.X, before_s)
    assert not np.shares_memory(prep.X, t.X) and not np.shares_memory(prep.X_source, s.X)
    assert prep.X.shape == (60, len(prep.genes))


@pytest.mark.parametrize("form", ["dense counts", "sparse counts", "integer counts", "log-normalised"])
@pytest.mark.parametrize("standardize", ["pooled", "separate", "none"])
def test_device_preparation_equals_the_host_one(form, standardize):
    """prepare(on_device=True) (issue 15: the target prepared in JAX on the fit's device) gives the
    host's genes, matrix (float32 rounding: 2e-5) and gene moments, and the same warnings."""
    import jax
    t, s = _counts_pair(4)
    X = np.asarray(t.X).copy()
    X[0] = 0  # a spot with no expression: warned on both paths
    t.X = {"dense counts": X, "sparse counts": sp.csr_matrix(X), "integer counts": X.astype(np.int64),
           "log-normalised": np.log1p(X)}[form]
    settings = DataSettings(standardize=standardize, n_genes=25)  # 25 of 40 genes: selection and a gather
    with pytest.warns(UserWarning, match="1 target spots have no expression"):
        host = prepare(t, s, "label", settings)
    with pytest.warns(UserWarning, match="1 target spots have no expression"):
        dev = prepare(t, s, "label", settings, on_device=True)
    assert isinstance(dev.X, jax.Array) and isinstance(host.X, np.ndarray)
    assert dev.genes == host.genes and len(host.genes) == 25
    np.testing.assert_allclose(np.asarray(dev.X), host.X, atol=2e-5)
    np.testing.assert_allclose(dev.gene_mean, host.gene_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dev.gene_scale, host.gene_scale, rtol=1e-5)
    np.testing.assert_allclose(dev.X_source, host.X_source, atol=2e-5)  # pooled: moments combined


@pytest.mark.slow
@pytest.mark.parametrize("sparse", [False, True])
def test_fit_with_device_preparation_gives_the_host_labels(sparse):
    s, t = tb.simulate(2, height=16, width=16, n_genes=60, n_factors=4, n_domains=3)
    if sparse:
        rng = np.random.default_rng(0)
        t.X = sp.csr_matrix(rng.poisson(np.expm1(np.clip(np.asarray(t.X), 0, 4))).astype(np.float32))
        s.X = rng.poisson(np.expm1(np.clip(np.asarray(s.X), 0, 4))).astype(np.float32)
    kw = dict(n_domains=3, n_factors=4, seed=0, n_restarts=2)
    host = tb.fit_em(t, s, prepare_on="host", **kw)
    dev = tb.fit_em(t, s, prepare_on="device", **kw)
    np.testing.assert_array_equal(dev.labels, host.labels)
    np.testing.assert_allclose(dev.trace[-1], host.trace[-1], rtol=1e-4)  # float32 rounding
    np.testing.assert_allclose(dev.proba, host.proba, atol=5e-3)
    assert tb.adjusted_rand_index(dev.labels, t.obs["truth"].to_numpy()) > 0.5


def test_scanpy_highly_variable_genes_are_used_when_present():
    """A target with scanpy's `var["highly_variable"]` is fitted on those genes (the shared and
    usable ones) by default; genes="variance" still ranks by variance; a flag column that is not
    boolean is a ValueError naming it."""
    t, s = _counts_pair(3)
    flagged = [f"g{i}" for i in (5, 12, 17, 30, 31, 44, 49)]  # g5: not in the source
    t.var["highly_variable"] = t.var_names.isin(flagged)
    auto = prepare(t, s, "label", DataSettings(n_genes=10))
    assert auto.genes == [g for g in flagged if g != "g5"]
    hv = prepare(t, s, "label", DataSettings(genes="highly_variable"))
    assert hv.genes == auto.genes
    plain = prepare(t, s, "label", DataSettings(n_genes=10, genes="variance"))
    assert len(plain.genes) == 10 and plain.genes != auto.genes
    t2 = t.copy()
    del t2.var["highly_variable"]
    assert prepare(t2, s, "label", DataSettings(n_genes=10)).genes == plain.genes
    with pytest.raises(ValueError, match="highly_variable"):
        prepare(t2, s, "label", DataSettings(genes="highly_variable"))
    t2.var["highly_variable"] = np.arange(t2.n_vars, dtype=float)
    with pytest.raises(ValueError, match="highly_variable"):
        prepare(t2, s, "label", DataSettings())


def test_already_scaled_input_is_taken_with_a_warning():
    """Expression standardised per gene (sc.pp.scale) makes every gene's variance 1, so ranking
    genes by variance picks at random: the fit warns and says what to pass instead."""
    import warnings

    t, s = _counts_pair(4)
    logt = np.log1p(t.X / t.X.sum(1, keepdims=True) * 1e4)
    sd = logt.std(0, ddof=1)
    scaled = t.copy()
    scaled.X = np.clip((logt - logt.mean(0)) / np.where(sd > 0, sd, 1.0), -10, 10)
    with pytest.warns(UserWarning, match="sc.pp.scale"):
        prepare(scaled, s, "label", DataSettings(n_genes=10))
    logged = t.copy()
    logged.X = logt
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(logged, s, "label", DataSettings(n_genes=10))
    with warnings.catch_warnings():  # a list of genes is taken as given: no ranking to spoil
        warnings.simplefilter("error")
        prepare(scaled, s, "label", DataSettings(genes=("g12", "g30", "g31")))
