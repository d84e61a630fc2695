"""Every bad input gets a ValueError (or TypeError) that names the argument and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import transst_bayes as tb


@pytest.fixture
def pair():
    return tb.simulate(0, height=10, width=10, n_genes=30, n_factors=3, n_domains=2)


def _fit(t, s, **kw):
    kw = dict(dict(n_domains=2, n_factors=3, n_restarts=1, max_iter=3), **kw)
    return tb.fit_em(t, s, **kw)


def test_no_shared_genes(pair):
    s, t = pair
    s.var_names = [f"other{i}" for i in range(s.n_vars)]
    with pytest.raises(ValueError, match="share 0 genes"):
        _fit(t, s)


def test_fewer_shared_genes_than_q_plus_one(pair):
    s, t = pair
    s = s[:, :3].copy()
    with pytest.raises(ValueError, match="n_factors"):
        _fit(t, s)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(pair, bad):
    s, t = pair
    t.X[3, 4] = bad
    with pytest.raises(ValueError, match="target contains 1 NaN or inf"):
        _fit(t, s)
    s2, t2 = tb.simulate(0, height=10, width=10, n_genes=30, n_factors=3, n_domains=2)
    s2.X[0, 0] = bad
    with pytest.raises(ValueError, match="source contains"):
        _fit(t2, s2)


def test_negative_counts(pair):
    s, t = pair
    with pytest.raises(ValueError, match="negative values but counts=True"):
        _fit(t, s, counts=True)


def test_missing_coordinates(pair):
    s, t = pair
    del t.obsm["spatial"]
    with pytest.raises(ValueError, match=r"obsm\['spatial'\] is missing"):
        _fit(t, s)


def test_missing_label_column_and_missing_values(pair):
    s, t = pair
    with pytest.raises(ValueError, match="label_key='cell_type' is not a column"):
        _fit(t, s, label_key="cell_type")
    lab = s.obs["label"].astype(object)
    lab.iloc[:5] = None
    s.obs["label"] = lab
    with pytest.raises(ValueError, match="5 missing labels"):
        _fit(t, s)


def test_single_source_class(pair):
    s, t = pair
    s.obs["label"] = pd.Categorical(["only"] * s.n_obs)
    with pytest.raises(ValueError, match="single class"):
        _fit(t, s)


@pytest.mark.parametrize("K, msg", [(1, "n_domains must be >= 2"), (60, "too large for 100")])
def test_bad_k(pair, K, msg):
    s, t = pair
    with pytest.raises(ValueError, match=msg):
        _fit(t, s, n_domains=K)
    with pytest.raises(TypeError, match="n_domains"):
        _fit(t, s, n_domains=[2, "x"])


def test_q_not_below_genes(pair):
    s, t = pair
    # the genes match: the message says to lower n_factors, not to check the gene identifiers
    with pytest.raises(ValueError, match="lower n_factors below the number of shared genes"):
        _fit(t, s, n_factors=30)


def test_empty_target(pair):
    s, t = pair
    with pytest.raises(ValueError, match="empty"):
        _fit(t[:0].copy(), s)


def test_bad_options(pair):
    s, t = pair
    with pytest.raises(ValueError, match="transfer must be one of"):
        _fit(t, s, transfer="ridge")
    with pytest.raises(ValueError, match="variant must be one of"):
        _fit(t, s, variant="x")
    with pytest.raises(TypeError, match="unexpected keyword"):
        _fit(t, s, n_neighbours=5)
    with pytest.raises(ValueError, match="layer 'raw' not found"):
        _fit(t, s, layer="raw")


def test_array_input_needs_labels(pair):
    s, t = pair
    with pytest.raises(ValueError, match="source_labels"):
        tb.fit_em(np.asarray(t.X), np.asarray(s.X), spatial=t.obsm["spatial"], n_domains=2, n_factors=3)
    res = tb.fit_em(np.asarray(t.X), np.asarray(s.X), spatial=t.obsm["spatial"],
                    source_labels=s.obs["label"].to_numpy(), n_domains=2, n_factors=3, n_restarts=1)
    assert res.labels.shape == (100,)


# ------------------------------------------------ issue 13: argument types and silent errors
def _no_work(monkeypatch):
    """Make any data preparation fail loudly: the check must come before it."""
    def boom(*a, **k):
        raise AssertionError("data were prepared before the bad argument was reported")
    monkeypatch.setattr("transst_bayes.job.prepare", boom)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(seed="42"), TypeError, "seed must be an int, got '42'"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(n_restarts=2.5), TypeError, "n_restarts must be an int"),
    (dict(max_iter=True), TypeError, "max_iter must be an int"),
    (dict(n_factors=np.float64(3)), TypeError, "n_factors must be an int"),
    (dict(beta="1"), TypeError, "beta .* must be a number or None, got '1'"),
    (dict(beta=float("nan")), ValueError, "beta .* must be finite"),
    (dict(beta=float("inf")), ValueError, "beta .* must be finite"),
    (dict(weight=float("inf")), ValueError, "weight .* must be finite"),
    (dict(classifier=-1.0), ValueError, "classifier .* must be >= 0"),
    (dict(classifier="1"), TypeError, "classifier .* must be a number"),
    (dict(tol=float("nan")), ValueError, "tol must be finite"),
    (dict(tol=-1), ValueError, "tol must be > 0"),
    (dict(n_domains=3.0), TypeError, "n_domains must be an int"),
    (dict(n_domains=np.float64(3)), TypeError, "n_domains must be an int"),
    (dict(n_genes=-5), ValueError, "n_genes must be >= 1, got -5"),
    (dict(n_genes=10.5), TypeError, "n_genes must be an int"),
    (dict(n_neighbors=0), ValueError, "n_neighbors must be >= 1"),
    (dict(target_sum=0), ValueError, "target_sum must be > 0"),
    (dict(radius=-1.0), ValueError, "radius must be > 0"),
    (dict(prepare_on="gpu"), ValueError, "prepare_on must be one of"),
    (dict(prepare_on="device", dtype="float64"), ValueError, "prepare_on='device' prepares in float32"),
])
def test_bad_arguments_are_named_before_any_work(pair, monkeypatch, kw, exc, match):
    s, t = pair
    _no_work(monkeypatch)
    with pytest.raises(exc, match=match):
        _fit(t, s, **kw)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(num_samples=2.5), TypeError, "num_samples must be an int"),
    (dict(lr=float("nan")), ValueError, "lr must be finite"),
    (dict(seed="0"), TypeError, "seed must be an int"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
])
def test_bad_svi_arguments_are_named_before_any_work(pair, monkeypatch, kw, exc, match):
    s, t = pair
    _no_work(monkeypatch)
    with pytest.raises(exc, match=match):
        tb.fit_svi(t, s, n_domains=2, n_factors=3, **kw)


def test_three_column_coordinates_are_an_error(pair):
    s, t = pair
    t.obsm["spatial"] = np.c_[t.obsm["spatial"], np.arange(t.n_obs)]
    with pytest.raises(ValueError, match=r"obsm\['spatial'\] must be 2-D coordinates of shape \(n_spots, 2\), "
                                         r"got shape \(100, 3\)"):
        _fit(t, s)


@pytest.mark.parametrize("which", ["target", "source"])
def test_duplicated_gene_names_are_an_error(pair, which):
    s, t = pair
    a = t if which == "target" else s
    a.var_names = ["dup", "dup"] + list(a.var_names[2:])
    with pytest.raises(ValueError, match=f"{which}.var_names has 1 duplicated gene names .*'dup'.*"
                                         "var_names_make_unique"):
        _fit(t, s)


def test_arrays_of_different_widths_are_an_error(pair):
    s, t = pair
    X, Xs = np.asarray(t.X), np.asarray(s.X)[:, :-1]
    with pytest.raises(ValueError, match="source has 29 columns and target 30"):
        tb.fit_em(X, Xs, source_labels=s.obs["label"].to_numpy(), spatial=t.obsm["spatial"],
                  n_domains=2, n_factors=3)


def test_result_files_with_or_without_npz_and_bad_files(pair, tmp_path):
    s, t = pair
    res = _fit(t, s, calibrate="none")
    written = res.save(tmp_path / "fit")
    assert written.endswith("fit.npz")
    back = tb.load_result(tmp_path / "fit")
    np.testing.assert_array_equal(back.labels, res.labels)
    np.testing.assert_array_equal(tb.load_result(written).proba, res.proba)
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(0).bytes(200))
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    data = (tmp_path / "fit.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    np.savez(tmp_path / "obj.npz", __meta__=np.array([{"a": 1}], dtype=object))
    for name in ("junk", "plain", "cut", "obj"):
        with pytest.raises(ValueError, match=f"{name}.npz' is not a TransST result file"):
            tb.load_result(tmp_path / f"{name}.npz")
    import json
    with np.load(written) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    np.savez(tmp_path / "newer.npz", __meta__=np.asarray(json.dumps(dict(meta, format=99))), **arrays)
    with pytest.raises(ValueError, match="file format 99, newer than"):
        tb.load_result(tmp_path / "newer.npz")
    with pytest.raises(FileNotFoundError):
        tb.load_result(tmp_path / "absent")


def test_one_negative_value_in_counts_is_an_error_not_a_silent_switch(pair):
    s, t = pair
    rng = np.random.default_rng(0)
    t.X = rng.poisson(3.0, size=t.shape).astype(np.float32)
    s.X = rng.poisson(3.0, size=s.shape).astype(np.float32)
    t.X[2, 3] = -1
    with pytest.raises(ValueError, match="target looks like raw counts .* 1 negative value"):
        _fit(t, s)


@pytest.mark.parametrize("sparse", [False, True])
def test_device_preparation_names_bad_values_as_the_host_does(pair, sparse):
    """prepare_on='device' (issue 15) runs the target's checks in JAX: same errors, same words."""
    import scipy.sparse as sps
    s, t = pair
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=t.shape).astype(np.float32)
    s.X = rng.poisson(3.0, size=s.shape).astype(np.float32)
    form = sps.csr_matrix if sparse else np.asarray
    cases = [
        (lambda X: X.__setitem__((3, 4), np.nan), {}, "target contains 1 NaN or inf"),
        (lambda X: X.__setitem__((2, 3), -1.0), {}, "target looks like raw counts .* 1 negative value"),
        (lambda X: X.__setitem__((2, 3), -1.0), dict(counts=True), "negative values but counts=True"),
    ]
    for spoil, kw, match in cases:
        X = counts.copy()
        spoil(X)
        t.X = form(X)
        for where in ("host", "device"):
            with pytest.raises(ValueError, match=match):
                _fit(t, s, prepare_on=where, **kw)


def test_labels_one_and_one_point_zero_are_one_class(pair):
    s, t = pair
    lab = np.where(s.obs["label"].astype(str) == "domain0", 1, 2).astype(object)
    lab[:5] = 1.0
    s.obs["label"] = lab
    res = _fit(t, s, calibrate="none", domains="free")
    assert sorted(res.source_classes) == ["1", "2"]


def test_missing_library_values_are_an_error(pair):
    s, t = pair
    t.obs["lib"] = ["a"] * (t.n_obs - 1) + [None]
    with pytest.raises(ValueError, match="library_key.*1 missing"):
        _fit(t, s, library_key="lib")


@pytest.mark.parametrize("bad", [-1.0, np.nan])
def test_obsp_graph_with_negative_or_nan_weights_is_an_error(pair, bad):
    import scipy.sparse as sp
    s, t = pair
    A = sp.random(t.n_obs, t.n_obs, density=0.05, random_state=0, format="csr")
    A.data[0] = bad
    t.obsp["spatial_connectivities"] = A
    with pytest.raises(ValueError, match="negative, NaN or inf weights"):
        _fit(t, s)


def test_suspicious_inputs_warn_once_and_are_recorded(pair):
    s, t = pair
    s = s[:, :12].copy()  # 12 of the target's 30 genes
    t.X[5] = 0.0  # a spot without expression
    with pytest.warns(UserWarning) as rec:
        res = _fit(t, s, calibrate="none", n_factors=3)
    msgs = [str(w.message) for w in rec]
    assert any("only 12 of the target's 30 genes" in m for m in msgs)
    assert any("1 target spots have no expression" in m for m in msgs)
    assert any("only 12 of the target's 30 genes" in m for m in res.info["warnings"])
    assert any("no expression" in m for m in res.info["warnings"])


def test_empty_domains_warn(pair):
    s, t = pair
    with pytest.warns(UserWarning, match="domains hold no spot"):
        res = _fit(t, s, n_domains=9, domains="free", calibrate="none")
    assert any("hold no spot" in m for m in res.info["warnings"])


@pytest.fixture(scope="module")
def fitted():
    s, t = tb.simulate(0, height=8, width=8, n_genes=30, n_factors=3, n_domains=2)
    tb.tl.transst(t, s, n_domains=2, n_factors=3, n_restarts=1, max_iter=3, calibrate="none")
    return s, t


_SCANPY_STYLE_CASES = [
    ("tl.transst", dict(key_added=3), TypeError, "key_added must be a non-empty str"),
    ("tl.transst", dict(copy="yes"), TypeError, "copy must be True or False"),
    ("tl.markers", dict(n_top=2.5), TypeError, "n_top must be an int"),
    ("tl.markers", dict(n_top=-1), ValueError, "n_top must be >= 1"),
    ("tl.markers", dict(credible="0.9"), TypeError, "credible must be a number"),
    ("tl.markers", dict(domain=1.5), TypeError, "domain must be an int"),
    ("tl.markers", dict(key_added=1), TypeError, "key_added must be a non-empty str or None"),
    ("tl.transfer_breaking_genes", dict(n_top="3"), TypeError, "n_top must be an int"),
    ("pp.log_normalize", dict(target_sum="1"), TypeError, "target_sum must be a number"),
    ("pp.log_normalize", dict(target_sum=np.inf), ValueError, "target_sum must be finite"),
    ("pp.log_normalize", dict(copy=1), TypeError, "copy must be True or False"),
    ("pp.select_genes", dict(n_genes=True), TypeError, "n_genes must be an int"),
    ("pp.select_genes", dict(key_added=None), TypeError, "key_added must be a non-empty str"),
    ("pp.spatial_neighbors", dict(key_added=2), TypeError, "key_added must be a non-empty str"),
    ("pp.spatial_neighbors", dict(spatial_key="nope"), ValueError, r"adata.obsm\['nope'\] is missing"),
    ("pl.marker_heatmap", dict(n_top="5"), TypeError, "n_top must be an int"),
    ("pl.calibration", dict(reference="label", bins=1.5), TypeError, "bins must be an int"),
]


@pytest.mark.parametrize("func, kw, exc, match", _SCANPY_STYLE_CASES,
                         ids=[f"{c[0]}-{next(iter(c[1]))}" for c in _SCANPY_STYLE_CASES])
def test_scanpy_style_entry_points_name_bad_arguments(fitted, func, kw, exc, match):
    s, t = fitted
    t = t.copy()
    t.obs["label"] = t.obs["transst"].astype(str)
    if func == "pp.log_normalize":
        t.X = np.random.default_rng(0).poisson(2.0, t.shape).astype(np.float32)
    mod, name = func.split(".")
    f = getattr(getattr(tb, mod), name)
    args = (t, s) if func == "tl.transst" else (t,)
    with pytest.raises(exc, match=match):
        f(*args, **kw)


@pytest.mark.parametrize("func", ["tl.transst", "tl.markers", "pp.log_normalize", "pp.select_genes",
                                  "pp.spatial_neighbors", "pl.domains"])
def test_scanpy_style_entry_points_want_anndata(func):
    mod, name = func.split(".")
    with pytest.raises(TypeError, match="must be an AnnData"):
        getattr(getattr(tb, mod), name)(np.zeros((5, 4)))


def test_select_genes_refuses_duplicated_names(fitted):
    t = fitted[1].copy()
    t.var_names = ["g"] * t.n_vars
    with pytest.raises(ValueError, match="var_names_make_unique"):
        tb.pp.select_genes(t)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(height=0), ValueError, "height must be >= 2"),
    (dict(n_domains=1.5), TypeError, "n_domains must be an int"),
    (dict(seed="a"), TypeError, "seed must be an int"),
    (dict(shift="huge"), ValueError, "shift must be one of"),
    (dict(n_genes=5, n_factors=5), ValueError, "n_factors must be < n_genes"),
    (dict(mixing=float("nan")), ValueError, "mixing must be finite"),
    (dict(counts="yes"), TypeError, "counts must be True or False"),
])
def test_simulate_checks_its_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        tb.simulate(**kw)


@pytest.mark.parametrize("genes, exc", [(5, TypeError), ([1, 2], TypeError), ("top", ValueError)])
def test_bad_gene_choice_is_named(pair, genes, exc):
    s, t = pair
    with pytest.raises(exc, match="genes must be one of"):
        _fit(t, s, genes=genes)


@pytest.mark.parametrize("fit", [tb.fit_em, tb.fit_svi])
def test_a_one_spot_target_is_named(pair, fit):
    s, t = pair
    with pytest.raises(ValueError, match="target has 1 spot"):
        fit(t[:1].copy(), s, n_domains=2, n_factors=3)


def test_result_paths_and_keys_are_checked(pair):
    s, t = pair
    res = _fit(t, s, calibrate="none")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        res.save(3)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        tb.load_result(None)
    with pytest.raises(TypeError, match="key_added must be a non-empty str"):
        res.to_anndata(t, key_added=1)
    with pytest.raises(TypeError, match="must be an AnnData"):
        res.to_anndata(np.zeros((3, 3)))
