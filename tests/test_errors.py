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
    with pytest.raises(ValueError, match="n_factors"):
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
