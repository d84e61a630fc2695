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


def test_anchored_classes_cost_less_than_novel_domains():
    from transst_bayes.selection import weighted_params

    per = 10 + 55
    assert weighted_params(4, 10, 1600, True, 4) - weighted_params(3, 10, 1600, True, 3) == 0.5 * per
    assert weighted_params(5, 10, 1600, True, 4) - weighted_params(4, 10, 1600, True, 4) == 2.0 * per
    # free domains and the published count are unchanged
    assert weighted_params(4, 10, 1600, False, None) == 0.5 * (4 * per + 1)
    assert weighted_params(4, 10, 1600, True, None) == 2.0 * (4 * per + 1)


def test_listed_k_keeps_every_present_class():
    """Regression (measured log-likelihoods of an anchored fit with n_domains=[3, 4, 5, 6] on
    simulate(1, 40 x 40, p = 2,000, q = 10, error = 3), true K = 4): HBIC chose K = 3, dropping a
    present class, when anchored domains were counted as new clusters."""
    from transst_bayes.selection import criteria

    ll = {3: -20989.8, 4: -20692.5, 5: -20629.0, 6: -20555.5}
    hbic = {K: criteria(v, K, 10, 1600, 0.0, anchored=True, n_anchored=min(K, 4))["hbic"] for K, v in ll.items()}
    assert min(hbic, key=hbic.get) == 4
    old = {K: criteria(v, K, 10, 1600, 0.0, anchored=True)["hbic"] for K, v in ll.items()}
    assert min(old, key=old.get) == 3  # the published count's choice
