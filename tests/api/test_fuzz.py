"""Property-based inputs (hypothesis): random shapes, dtypes, sparsity, NaN / inf / negative
entries, duplicated names, coordinate shapes and argument values. Every call to `fit_em` either
returns a result whose arrays are finite (probabilities summing to 1) or raises ValueError /
TypeError from this package; never another exception type, never NaN (issue 13)."""

from __future__ import annotations

import os
import traceback
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import transst_bayes as tb  # noqa: E402

BAD_VALUES = {"none": None, "nan": np.nan, "inf": np.inf, "negative": -3.0}


def _adata(rng, side: int, p: int, kind: str, sparse: bool, prefix: str, labels: bool):
    n = side * side
    if kind == "counts":
        X = rng.poisson(2.0, size=(n, p)).astype(np.float32)
    else:
        X = rng.normal(size=(n, p)).astype(np.float32)
    obs = pd.DataFrame(index=[f"{prefix}{i}" for i in range(n)])
    if labels:
        obs["label"] = pd.Categorical(np.where(np.arange(n) % side < side // 2, "a", "b"))
    a = ad.AnnData(sp.csr_matrix(X) if sparse else X, obs=obs,
                   var=pd.DataFrame(index=[f"g{j}" for j in range(p)]))
    rr, cc = np.divmod(np.arange(n), side)
    a.obsm["spatial"] = np.c_[cc, rr].astype(float)
    return a


@st.composite
def cases(draw):
    if draw(st.booleans()):  # half the cases: valid arguments, so that fits run on odd data
        return dict(
            seed=draw(st.integers(0, 10_000)), side=draw(st.sampled_from([6, 8])),
            p=draw(st.sampled_from([20, 30])), kind=draw(st.sampled_from(["counts", "gaussian"])),
            sparse=draw(st.booleans()), bad=draw(st.sampled_from(["none", "none", "negative"])),
            bad_in=draw(st.sampled_from(["target", "source"])), duplicate=None, coord_cols=2,
            n_domains=draw(st.sampled_from([2, 3, None, [2, 3]])), n_factors=draw(st.sampled_from([2, 3])),
            fit_seed=draw(st.sampled_from([0, 1])), beta=draw(st.sampled_from([None, 0.5])),
            n_genes=draw(st.sampled_from([2000, 10])), with_source=draw(st.booleans()),
        )
    return dict(
        seed=draw(st.integers(0, 10_000)),
        side=draw(st.sampled_from([6, 8])),
        p=draw(st.sampled_from([20, 30])),
        kind=draw(st.sampled_from(["counts", "gaussian"])),
        sparse=draw(st.booleans()),
        bad=draw(st.sampled_from(list(BAD_VALUES))),
        bad_in=draw(st.sampled_from(["target", "source"])),
        duplicate=draw(st.sampled_from([None, "target", "source"])),
        coord_cols=draw(st.sampled_from([2, 2, 2, 1, 3])),
        n_domains=draw(st.sampled_from([2, 3, None, 0, -1, 2.0, "3", True, [2, 3]])),
        n_factors=draw(st.sampled_from([2, 3, 0, 2.5])),
        fit_seed=draw(st.sampled_from([0, 1, -1, "0", 1.5])),
        beta=draw(st.sampled_from([None, 0.5, -1.0, float("nan"), "1"])),
        n_genes=draw(st.sampled_from([2000, 10, 0, -5])),
        with_source=draw(st.booleans()),
    )


def _from_package(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return any("transst_bayes" in f.filename for f in frames)


def _check(case, fit, extra: dict) -> None:
    """Build the inputs `case` describes, call `fit`, and check the outcome."""
    rng = np.random.default_rng(case["seed"])
    tgt = _adata(rng, case["side"], case["p"], case["kind"], case["sparse"], "t", labels=False)
    src = _adata(rng, case["side"], case["p"], case["kind"], case["sparse"], "s", labels=True) \
        if case["with_source"] else None
    value = BAD_VALUES[case["bad"]]
    where = tgt if case["bad_in"] == "target" or src is None else src
    if value is not None:
        X = where.X.toarray() if sp.issparse(where.X) else np.array(where.X)
        X[int(rng.integers(X.shape[0])), int(rng.integers(X.shape[1]))] = value
        where.X = X
    dup = {"target": tgt, "source": src}.get(case["duplicate"])
    if dup is not None:
        dup.var_names = ["g0", "g0"] + list(dup.var_names[2:])
    if case["coord_cols"] != 2:
        xy = tgt.obsm["spatial"]
        tgt.obsm["spatial"] = xy[:, :1] if case["coord_cols"] == 1 else np.c_[xy, np.zeros(len(xy))]
    kw = dict(n_domains=case["n_domains"], n_factors=case["n_factors"], seed=case["fit_seed"],
              n_genes=case["n_genes"], calibrate="none", **extra)
    if fit is tb.fit_em:
        kw.update(beta=case["beta"], n_restarts=1, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = fit(tgt, src, **kw)
        except (ValueError, TypeError) as err:
            assert _from_package(err), f"{type(err).__name__} raised outside transst_bayes: {err}"
            assert str(err), "an error without a message"
            hyp.event(f"raised {type(err).__name__}")
            return
    hyp.event("fitted")
    for name in ("proba", "mu", "Sigma", "W_t", "psi", "factors"):
        assert np.all(np.isfinite(getattr(res, name))), name
    np.testing.assert_allclose(res.proba.sum(axis=1), 1.0, atol=1e-5)
    assert res.labels.shape == (tgt.n_obs,)


_SETTINGS = dict(deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.slow
@settings(max_examples=16, **_SETTINGS)
@given(cases())
def test_every_input_gives_a_finite_result_or_a_named_error(case):
    _check(case, tb.fit_em, {})


# The longer profile, opt-in because it takes minutes (36 EM + 12 SVI cases: 346 s on 2 cores):
#   TRANSST_FUZZ_EXAMPLES=12 python -m pytest -m slow tests/api/test_fuzz.py
# runs 3 x N EM cases (other seeds than the fast test) and N SVI cases with a few short rounds.
_LONG = int(os.environ.get("TRANSST_FUZZ_EXAMPLES", "0"))
long_profile = pytest.mark.skipif(_LONG < 1, reason="long fuzz profile: set TRANSST_FUZZ_EXAMPLES=N")


@pytest.mark.slow
@long_profile
@settings(max_examples=max(3 * _LONG, 1), **_SETTINGS)
@given(cases(), st.integers(0, 2**16))
def test_long_profile_em(case, salt):
    case = dict(case, seed=case["seed"] + salt)
    _check(case, tb.fit_em, {})


@pytest.mark.slow
@long_profile
@settings(max_examples=max(_LONG, 1), **_SETTINGS)
@given(cases(), st.sampled_from(["delta", "normal"]))
def test_long_profile_svi(case, guide):
    _check(case, tb.fit_svi, dict(guide=guide, steps_per_round=5, max_rounds=2, num_samples=4))


# The second round's categories (containers, dtypes, label columns, file faults): the kinds that
# must be refused are refused with a ValueError; the others fit to finite results.
REFUSED_LABELS = ("nan", "nan_string", "empty_string", "continuous", "mixed")


def _labels_of(kind: str, n: int, rng):
    half = np.arange(n) % 2
    return {
        "ok": np.where(half, "a", "b"),
        "numeric": half.astype(np.int64),
        "int_float": np.array([int(v) if i % 3 else float(v) for i, v in enumerate(half)], dtype=object),
        "nan": np.where(half, "a", None),
        "nan_string": np.where(half, "a", "nan"),
        "empty_string": np.where(half, "a", ""),
        "continuous": rng.random(n) * 100,
        "mixed": np.array(["a" if v else 1 for v in half], dtype=object),
    }[kind]


@st.composite
def round2_cases(draw):
    return dict(seed=draw(st.integers(0, 10_000)),
                container=draw(st.sampled_from(["dense", "csr", "csc", "view"])),
                dtype=draw(st.sampled_from(["float32", "float16", "int64", "uint16", "float64", "float64_huge"])),
                labels=draw(st.sampled_from(["ok", "numeric", "int_float"] + list(REFUSED_LABELS))))


@pytest.mark.slow
@settings(max_examples=12, **_SETTINGS)
@given(round2_cases())
def test_containers_dtypes_and_label_columns(case):
    rng = np.random.default_rng(case["seed"])
    tgt = _adata(rng, 8, 20, "counts", False, "t", labels=False)
    src = _adata(rng, 8, 20, "counts", False, "s", labels=True)
    src.obs["label"] = pd.Series(_labels_of(case["labels"], src.n_obs, rng), index=src.obs_names)
    huge = case["dtype"] == "float64_huge"
    X = np.asarray(tgt.X, np.float64 if huge else case["dtype"])
    if huge:
        X = X + 0.5  # not counts
        X[0, 0] = 1e300
    if case["container"] in ("csr", "csc") and X.dtype != np.float16:  # scipy stores no float16
        X = sp.csr_matrix(X) if case["container"] == "csr" else sp.csc_matrix(X)
    tgt.X = X
    if case["container"] == "view":
        tgt = tgt[: tgt.n_obs - 1]
    must_refuse = case["labels"] in REFUSED_LABELS or huge
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = tb.fit_em(tgt, src, n_domains=2, n_factors=2, n_restarts=1, max_iter=3, calibrate="none")
        except (ValueError, TypeError) as err:
            assert _from_package(err) and str(err)
            assert must_refuse, f"{case}: refused a legal input: {err}"
            return
    assert not must_refuse, f"{case}: fitted an input that must be refused"
    assert np.all(np.isfinite(res.proba)) and np.all(np.isfinite(res.factors))
    np.testing.assert_allclose(res.proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def saved_fit(tmp_path_factory):
    src, tgt = tb.simulate(0, height=8, width=8, n_genes=20, n_factors=2, n_domains=2)
    res = tb.fit_em(tgt, src, n_domains=2, n_factors=2, n_restarts=1, max_iter=3, calibrate="none")
    return res, tmp_path_factory.mktemp("faults")


@pytest.mark.slow
@settings(max_examples=10, **_SETTINGS)
@given(st.floats(0.0, 0.99), st.sampled_from(["file size limit", "interrupt"]))
def test_file_faults_never_destroy_the_previous_file(saved_fit, fraction, fault):
    import resource
    import signal

    res, folder = saved_fit
    path = folder / "fit.npz"
    res.save(path)
    before = path.read_bytes()
    limit = int(fraction * len(before))
    if fault == "file size limit":
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            with pytest.raises(OSError):
                res.save(path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old)
    else:
        real = np.savez_compressed

        def interrupted(file, **arrays):
            with open(file, "wb") as fh:
                fh.write(before[:limit])
            raise KeyboardInterrupt

        np.savez_compressed = interrupted
        try:
            with pytest.raises(KeyboardInterrupt):
                res.save(path)
        finally:
            np.savez_compressed = real
    assert path.read_bytes() == before
    assert not [p for p in folder.iterdir() if ".partial" in p.name]
    np.testing.assert_array_equal(tb.load_result(path).labels, res.labels)
