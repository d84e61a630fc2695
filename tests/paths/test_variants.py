"""A variant is one record in `variants.py`: a toy variant added there (the two-stage kernel
without the classifier's term) runs through both fits with nothing else changed, and gives the
two-stage fit with classifier=0."""

from __future__ import annotations

import numpy as np
import pytest

import transst_bayes as tb
from transst_bayes import variants as VR


@pytest.mark.slow
def test_a_variant_added_in_one_place_runs_through_both_paths(monkeypatch, small_pair):
    toy = VR.TWO_STAGE._replace(name="scores_only", classifier_term=False)
    monkeypatch.setitem(VR.VARIANTS, toy.name, toy)
    src, tgt = small_pair
    kw = dict(n_domains=3, n_factors=4, n_restarts=1, calibrate="none", transfer="eb")
    res = tb.fit_em(tgt, src, variant="scores_only", **kw)
    ref = tb.fit_em(tgt, src, variant="two_stage", classifier=0.0, **kw)
    assert res.settings["variant_used"] == "scores_only"
    np.testing.assert_array_equal(res.labels, ref.labels)
    assert res.info["classifier"]["used"] is False
    svi = tb.fit_svi(tgt, src, n_domains=3, n_factors=4, calibrate="none", max_rounds=2,
                     num_samples=5, em_options=dict(variant="scores_only", n_restarts=1, transfer="eb"))
    assert svi.settings["model"] == "scores_model"
    assert svi.settings["em"]["variant"] == "scores_only"


def test_an_unknown_variant_is_refused_naming_the_known_ones(small_pair):
    src, tgt = small_pair
    with pytest.raises(ValueError, match=r"variant must be one of \('joint', 'two_stage'\), got 'nope'"):
        tb.fit_em(tgt, src, variant="nope")
