"""support.py: whether the source can inform the target (the share of the target's variance in
the span of the source's loadings over chance), and the warning when it cannot: on a target with
no structure (each gene shuffled over the spots) and on a target of another tissue."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import transst_bayes as tb
from conftest import benchmark, data_dir
from transst_bayes.support import SUPPORT_MIN, source_support


def test_support_matches_its_definition_and_is_one_for_noise():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 60)) + 3.0  # an offset: the measure centres the target
    W = rng.normal(size=(60, 6))
    Q, _ = np.linalg.qr(W)
    Xc = X - X.mean(0)
    want = (np.sum((Xc @ Q) ** 2) / np.sum(Xc**2)) / (6 / 60)
    assert float(source_support(X, W)) == pytest.approx(want, rel=1e-4)
    noise = [float(source_support(rng.normal(size=(2000, 60)), rng.normal(size=(60, 6)))) for _ in range(5)]
    assert np.mean(noise) == pytest.approx(1.0, abs=0.1)
    # structure along W's span: far above chance
    Z = rng.normal(size=(400, 6)) * 3.0
    assert source_support(Z @ W.T + rng.normal(size=(400, 60)), W) > 5


def _shuffled(adata, seed=0):
    rng = np.random.default_rng(seed)
    out = adata.copy()
    X = np.array(out.X)
    for j in range(X.shape[1]):
        X[:, j] = rng.permutation(X[:, j])
    out.X = X
    return out


def _support_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "cannot inform this target" in str(w.message)]


@pytest.mark.slow
def test_a_structureless_target_is_warned_about(small_pair):
    src, tgt = small_pair
    kw = dict(n_domains=3, n_factors=5, n_restarts=1, calibrate="none", transfer="eb")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ok = tb.fit_em(tgt, src, **kw)
    assert ok.info["source_support"] > 2 * SUPPORT_MIN and not _support_warnings(rec)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        noise = tb.fit_em(_shuffled(tgt), src, **kw)
    assert noise.info["source_support"] < SUPPORT_MIN
    assert len(_support_warnings(rec)) == 1 and noise.info["warnings"]


@pytest.mark.slow
@pytest.mark.skipif(data_dir() is None or not (data_dir() / "seqfish_embryo").exists()
                    or not (data_dir() / "her2st").exists(), reason="HER2ST / seqFISH data not found")
def test_a_target_of_another_tissue_is_warned_about():
    """HER2ST H1 (human breast cancer) as target, the seqFISH mouse embryo (gene symbols upper-
    cased: 147 shared genes) as source: support measured 1.1 (related sections 3.9-7.7)."""
    rd = benchmark("real_data")
    target, _, _ = rd.her2st_protocol("H1")
    source, _, _, label, _ = rd.transfer_protocol("seqfish", "embryo1_z2")
    source = source.copy()
    source.var_names = [g.upper() for g in source.var_names]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = tb.fit_em(target, source, label, n_domains=6, calibrate="none", transfer="eb", n_restarts=1)
    assert res.info["source_support"] < SUPPORT_MIN and len(_support_warnings(rec)) == 1
