"""Conformal domain sets: the threshold is the right order statistic (brute force), the sets
cover at 1 - alpha when held-out and target spots are exchangeable (simulated probabilities),
and a fit with held-out source sections gives sets that cover its simulated target."""

from __future__ import annotations

import math

import numpy as np
import pytest

import transst_bayes as tb
from transst_bayes import conformal as CF
from transst_bayes.calibration import temper
from transst_bayes.metrics import domain_labels


def _draw(rng, n, K=4, sharp=3.0):
    """Probabilities and labels drawn from them (so the probabilities are calibrated)."""
    logits = sharp * rng.normal(size=(n, K))
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    y = np.array([rng.choice(K, p=p) for p in P])
    return P, y


def test_threshold_is_the_finite_sample_order_statistic():
    names = ["a", "b"]
    p_true = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])  # scores 0.05 ... 0.8
    proba = np.stack([p_true, 1 - p_true], axis=1)
    truth = np.array(["a"] * 9)
    conf = CF.thresholds([(names, proba, truth)], temper, 1.0)
    s = np.sort(1 - p_true)
    for a, t in zip(conf["alphas"], conf["thresholds"]):
        rank = math.ceil(10 * (1 - a))  # n = 9
        assert t == pytest.approx(1.0 if rank > 9 else s[rank - 1])
    assert conf["n_spots"] == 9
    # a spot's set: every domain with p >= 1 - threshold, and its most probable one
    sets = CF.domain_sets(np.array([[0.5, 0.5], [0.97, 0.03]]), conf, 0.2)  # rank 8: threshold 0.7
    np.testing.assert_array_equal(sets, [[True, True], [True, False]])


def test_sets_cover_at_the_stated_level_when_spots_are_exchangeable():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d"]
    P, y = _draw(rng, 8000)
    conf = CF.thresholds([(names, P, np.asarray(names)[y])], temper, 1.0)
    Pt, yt = _draw(rng, 8000)
    for alpha in (0.05, 0.1, 0.2):  # sd of the coverage: about 0.005 from each draw
        cover = CF.domain_sets(Pt, conf, alpha)[np.arange(yt.size), yt].mean()
        assert 1 - alpha - 0.02 <= cover <= 1 - alpha + 0.02, (alpha, cover)
    # smaller than the model's own 90% sets (most probable domains until 90% of the mass), which
    # over-cover even on calibrated probabilities
    size = CF.domain_sets(Pt, conf, 0.1).sum(1).mean()
    order = np.argsort(-Pt, axis=1)
    own = (np.cumsum(np.take_along_axis(Pt, order, 1), 1) < 0.9).sum(1) + 1
    assert size < own.mean(), (size, own.mean())


def test_alpha_must_be_a_stored_level():
    conf = {"alphas": list(CF.ALPHAS), "thresholds": [0.5] * len(CF.ALPHAS)}
    with pytest.raises(ValueError, match="alpha must be one of 0.01, 0.02"):
        CF.domain_sets(np.full((2, 2), 0.5), conf, 0.123)


@pytest.mark.slow
def test_a_fit_gives_domain_sets_that_cover_its_target():
    src, tgt = tb.simulate(0, height=24, width=24, n_genes=120, n_factors=4, n_domains=3, error=3.0,
                           source_sections=3)
    res = tb.fit_em(tgt, src, n_domains=3, n_factors=4, n_restarts=1)
    truth = tgt.obs["truth"].astype(str).to_numpy()
    sets = res.domain_sets(0.1)
    rows = np.arange(sets.shape[0])  # each set holds the spot's domain and its most probable one
    assert sets.shape == res.proba.shape and sets[rows, res.labels].all() and sets[rows, res.proba.argmax(1)].all()
    cols = np.asarray(domain_labels(res.names, res.proba, truth))  # free domains read as labels
    covered = np.array([truth[j] in set(cols[sets[j]]) for j in range(truth.size)])
    assert covered.mean() >= 0.85, covered.mean()
    assert res.info["conformal"]["n_spots"] == src.n_obs
    none = tb.fit_em(tgt, src, n_domains=3, n_factors=4, n_restarts=1, calibrate="none")
    assert none.info["conformal"] is None
    with pytest.raises(ValueError, match="no conformal thresholds"):
        none.domain_sets()
