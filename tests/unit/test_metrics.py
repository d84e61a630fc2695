"""Scores against scikit-learn's reference implementations and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from transst_bayes import metrics as M

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(8))
def test_ari_and_nmi_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    a = rng.integers(0, int(rng.integers(1, 9)), size=n)
    # b: a noisy copy of a with its own label names, so that the scores are not all near 0
    b = np.where(rng.random(n) < 0.6, a * 7 + 3, rng.integers(0, 5, size=n))
    assert M.adjusted_rand_index(a, b) == pytest.approx(sk.adjusted_rand_score(a, b), abs=1e-12)
    assert M.normalized_mutual_info(a, b) == pytest.approx(sk.normalized_mutual_info_score(a, b), abs=1e-12)


def test_scores_on_hand_built_cases():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert M.adjusted_rand_index(a, a) == 1.0
    assert M.adjusted_rand_index(a, np.array([5, 5, 9, 9, 7, 7])) == 1.0  # names do not matter
    assert M.normalized_mutual_info(a, a) == pytest.approx(1.0)
    # one label on both sides: a perfect (trivial) agreement
    assert M.adjusted_rand_index(np.zeros(4), np.zeros(4)) == 1.0
    # pairs: a = {01, 23, 45} together, b = {012}, {345}: 2 of the 3 pairs in a are together in b
    b = np.array([0, 0, 0, 1, 1, 1])
    assert M.adjusted_rand_index(a, b) == pytest.approx(sk.adjusted_rand_score(a, b))
    assert M.adjusted_rand_index(a, b) < 0.5


def test_align_labels_undoes_a_permutation():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=300)
    perm = np.array([3, 0, 4, 1, 2])
    found = M.align_labels(perm[truth], truth)  # found[k]: the reference label of label k
    assert np.array_equal(found[perm[truth]], truth)
    assert np.array_equal(found[perm], np.arange(5))


def test_expected_calibration_error_by_hand():
    # two bins: confidence 0.25 (4 spots, 1 correct: error 0) and 0.95 (6 spots, 3 correct: 0.45)
    conf = np.array([0.25] * 4 + [0.95] * 6)
    correct = np.array([1, 0, 0, 0] + [1, 1, 1, 0, 0, 0], bool)
    assert M.expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.6 * 0.45)
