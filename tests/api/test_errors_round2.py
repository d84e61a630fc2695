"""The second round of bad and awkward inputs: each is refused before any fitting with an error
that names the argument and the fix, or, where legal, computed in a dtype that cannot overflow
or fitted with a warning that names the cause."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import transst_bayes as tb


@pytest.fixture
def pair():
    return tb.simulate(0, height=12, width=12, n_genes=30, n_factors=3, n_domains=2)


def _fit(t, s, **kw):
    kw = dict(dict(n_domains=2, n_factors=3, n_restarts=1, max_iter=3, calibrate="none"), **kw)
    return tb.fit_em(t, s, **kw)


@pytest.fixture
def no_fit(monkeypatch):
    """Every refusal below comes before the first compiled program runs."""
    def refuse(*a, **k):
        raise AssertionError("the fit started before the bad input was reported")

    monkeypatch.setattr("transst_bayes.fit.fit_arrays", refuse)


@pytest.mark.parametrize("labels, match", [
    (lambda n: np.where(np.arange(n) % 2, "a", "nan"), "missing labels"),
    (lambda n: np.where(np.arange(n) % 2, "a", ""), "missing labels"),
    (lambda n: np.random.default_rng(0).random(n) * 1000, "looks continuous"),
    (lambda n: np.array(["a" if i % 2 else 1 for i in range(n)], dtype=object), "mixes label types"),
])
def test_label_columns_that_cannot_be_classes_are_refused(pair, no_fit, labels, match):
    s, t = pair
    s.obs["label"] = pd.Series(labels(s.n_obs), index=s.obs_names)
    with pytest.raises(ValueError, match=match):
        _fit(t, s)


@pytest.mark.slow
def test_integer_and_float_labels_are_one_class_each_with_a_warning(pair):
    s, t = pair
    codes = s.obs["label"].cat.codes.to_numpy()
    s.obs["label"] = pd.Series([int(c) if i % 2 else float(c) for i, c in enumerate(codes)], index=s.obs_names,
                               dtype=object)
    with pytest.warns(UserWarning, match="mixes integer and float labels"):
        res = _fit(t, s)
    assert sorted(res.source_classes) == ["0", "1"]


def test_float16_counts_are_normalised_without_overflow(pair):
    """Library sizes above float16's 65,504 summed in float16 became inf: those spots were
    reported as "spots with no expression" and fitted as empty."""
    s, t = pair
    rng = np.random.default_rng(0)
    counts = rng.poisson(40.0, size=t.shape).astype(np.float16)  # ~1,200 per spot
    counts[:10] *= 80  # ~96,000 per spot: past float16's range as a sum
    t.X = counts
    from transst_bayes.data import log_normalise

    Y = log_normalise(t.X, 1e4)
    assert np.isfinite(Y).all() and (Y[:10].sum(axis=1) > 0).all()
    np.testing.assert_allclose(Y[:10], log_normalise(counts[:10].astype(np.float64), 1e4), rtol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "spots have no expression" warning
        try:
            _fit(t, None, n_domains=2)
        except UserWarning as w:
            assert "no expression" not in str(w), w


def test_values_beyond_float32_are_refused(pair, no_fit):
    s, t = pair
    t.X = np.asarray(t.X, np.float64)
    t.X[2, 3] = 1e300
    with pytest.raises(ValueError, match="target has 1 values beyond .*float32"):
        _fit(t, s, counts=False)


def test_duplicated_gene_names_in_genes_are_refused(pair, no_fit):
    s, t = pair
    g = list(t.var_names[:10])
    with pytest.raises(ValueError, match="genes lists 2 names more than once"):
        _fit(t, s, genes=g + g[:2])


@pytest.mark.parametrize("fit", [tb.fit_em, tb.fit_svi])
def test_repeated_k_is_refused(pair, no_fit, fit):
    s, t = pair
    with pytest.raises(ValueError, match=r"n_domains lists \[3\] more than once"):
        fit(t, s, n_domains=[3, 3, 4], n_factors=3)
    with pytest.raises(ValueError, match=r"n_novel lists \[1\] more than once"):
        fit(t, s, n_novel=[1, 1], n_factors=3)


def test_neighbourhoods_as_large_as_the_section(pair, no_fit):
    s, t = pair
    with pytest.raises(ValueError, match="n_neighbors=500 must be smaller than the number of target spots"):
        _fit(t, s, n_neighbors=500)


def test_wide_neighbourhood_is_warned_about(pair):
    s, t = pair
    with pytest.warns(UserWarning, match="n_neighbors=100 links each spot to 69%"):
        _fit(t, s, n_neighbors=100)


@pytest.mark.slow
def test_an_unconverged_fit_is_warned_about(pair):
    """...at the user's call on both paths, however deep in the package the warning is raised
    (a fixed stacklevel pointed into the package once fit_svi's run moved one call deeper)."""
    s, t = pair
    with pytest.warns(UserWarning, match="stopped after 1 iterations without converging") as rec:
        _fit(t, s, max_iter=1)
    with pytest.warns(UserWarning, match="SVI fit at K=2 stopped") as rec_svi:
        tb.fit_svi(t, s, n_domains=2, n_factors=3, calibrate="none", max_rounds=1,
                   steps_per_round=5, num_samples=2)
    for r in (rec, rec_svi):
        where = {w.filename for w in r if "without converging" in str(w.message)}
        assert where == {__file__}, where


def test_cli_refuses_one_domain_before_reading_files(tmp_path, capsys):
    from transst_bayes.cli import EXIT_BAD_INPUT, main

    rc = main(["--no-cache", "fit", "--target", str(tmp_path / "absent.h5ad"), "--n-domains", "1",
               "--out", str(tmp_path / "o.h5ad")])
    assert rc == EXIT_BAD_INPUT and "--n-domains must be >= 2" in capsys.readouterr().err
