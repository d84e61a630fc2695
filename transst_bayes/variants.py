"""The clustering variants, one record each: what the EM kernel clusters, whether the source
classifier's term may join, and which NumPyro model `fit_svi` fits by default. A new variant
that reuses the kernels' two forms is one more record here (`tests/paths/test_variants.py` adds one);
a variant with a new form of its own also needs its branch in `em/cluster.py` (EM) or only a
NumPyro model passed to `fit_svi(model=...)` (SVI; notebook 04)."""

from __future__ import annotations

from typing import NamedTuple


class Variant(NamedTuple):
    name: str
    on_scores: bool  # clusters the transfer step's factor scores under its fixed loadings (else
    #                  the expression, the loadings re-fitted with the domains, factors integrated out)
    classifier_term: bool  # the source classifier's term may join anchored domains' data term
    svi_model: str  # the `transst_bayes.models` model fit_svi fits by default with a source
    svi_model_no_source: str  # ... and without one


JOINT = Variant("joint", on_scores=False, classifier_term=False, svi_model="transst_model",
                svi_model_no_source="fixed_loadings_model")
TWO_STAGE = Variant("two_stage", on_scores=True, classifier_term=True, svi_model="scores_model",
                    svi_model_no_source="scores_model")
VARIANTS = {v.name: v for v in (JOINT, TWO_STAGE)}


def get(name: str) -> Variant:
    """The record of the variant called `name` (ValueError naming the known ones)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {name!r}") from None
