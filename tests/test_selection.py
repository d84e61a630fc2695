"""K-selection criteria against values computed by hand."""

from __future__ import annotations

import math

import pytest

from transst_bayes.selection import CRITERIA, criteria, n_params


def test_parameter_count():
    # K means (q each) + K covariances (q(q+1)/2 each) + beta
    assert n_params(3, 4) == 3 * (4 + 10) + 1 == 43
    assert n_params(1, 1) == 3


@pytest.mark.parametrize("n, anchored, const", [(500, False, 0.5), (2000, False, 0.5), (500, True, 0.5),
                                                (2000, True, 2.0)])
def test_criteria_by_hand(n, anchored, const):
    """Free domains: the published small-sample constant 0.5 at every size; novel domains beside
    anchored ones: the published switch (0.5 below 1,000 spots, else 2)."""
    ll, K, q, H = -1234.5, 3, 4, 12.5
    c = criteria(ll, K, q, n, H, anchored=anchored)
    df = 43
    assert set(CRITERIA) <= set(c)
    assert c["n_params"] == df
    assert c["sbic"] == pytest.approx(2469.0 + df * math.log(n))
    assert c["bic"] == pytest.approx(2469.0 + const * df * math.log(n))
    assert c["mbic"] == pytest.approx(2469.0 + const * df * math.log(n) * math.log(math.log(q + n)))
    assert c["hbic"] == pytest.approx(2469.0 + const * df * math.log(math.log(n) + df))
    assert c["icl"] == pytest.approx(c["bic"] + 25.0)


def test_a_better_fit_with_the_same_size_scores_lower_everywhere():
    lo, hi = criteria(-1000.0, 3, 4, 800, 0.0), criteria(-900.0, 3, 4, 800, 0.0)
    assert all(hi[k] < lo[k] for k in CRITERIA)
