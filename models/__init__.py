"""NumPyro model definitions of TransST (importable as `transst_bayes.models`).

Pieces (one file each): `potts` (the Potts label prior), `likelihood` (factor likelihoods and the
per-spot domain mixture), `transfer` (the transfer-shrinkage prior), `domains` (priors of noise,
domain distributions and smoothness) and `transst` (the full models composed from them).
"""

from .domains import domain_distributions, noise_variances, smoothness
from .likelihood import DomainMixture, factor_components, integrated_components
from .potts import Graph, Potts, mean_field_logits
from .transfer import FORMS, free_loadings, transfer_loadings
from . import sites
from .transst import SpotData, explicit_z_model, fixed_loadings_model, no_transfer_model, scores_model, spot_plate, transst_model

__all__ = [
    "DomainMixture", "FORMS", "Graph", "Potts", "SpotData", "domain_distributions",
    "explicit_z_model", "factor_components", "fixed_loadings_model", "free_loadings", "integrated_components",
    "mean_field_logits", "no_transfer_model", "noise_variances", "scores_model", "sites", "smoothness",
    "spot_plate",
    "transfer_loadings", "transst_model",
]
