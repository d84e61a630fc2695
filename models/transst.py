"""The TransST models as NumPyro programs (plates "spot", "gene", "factor", "domain").

`transst_model` (z integrated out, loadings under the transfer prior), `scores_model` (the
two-stage form: the transferred factor scores clustered, loadings fixed), `fixed_loadings_model`
(no source: loadings and noise fixed at an EM fit's), `no_transfer_model`, `explicit_z_model`. Every model has the signature `model(data, K, n_factors, batch_size=None, **options)`:
- `data`: SpotData (X the standardised expression, field the Potts mean-field neighbour sums
  of the current responsibilities, W_s the source loadings or None);
- `K` domains, `n_factors` q; `batch_size`: spots per minibatch (None: all spots).
The domain label of each spot is summed out by a `DomainMixture` site whose prior logits are
the mean-field Potts field beta * data.field; the fitting code reads the responsibilities from
that site. A variant written in the same style (replace a piece, keep the sites) runs through
`transst_bayes.fit_svi` unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import jax
import numpyro
import numpyro.distributions as dist

from transst_bayes.priors import DomainPrior

from . import sites as S
from .domains import domain_distributions, noise_variances, smoothness
from .likelihood import DomainMixture, factor_components, integrated_components
from .potts import mean_field_logits
from .transfer import free_loadings, transfer_loadings


class SpotData(NamedTuple):
    X: jax.Array  # (n, p) standardised expression of the target
    field: jax.Array  # (n, K) sum over neighbours of the current responsibilities
    W_s: jax.Array | None = None  # (p, q) source loadings
    prior: DomainPrior | None = None  # centres of the domain priors (None: every domain free)
    w: jax.Array | None = None  # (n,) 1 a spot, 0 a row that pads the spots over devices (None: none)
    W: jax.Array | None = None  # (p, q) fixed loadings (`fixed_loadings_model`: an EM fit's)
    psi: jax.Array | None = None  # (p,) fixed noise variances (`fixed_loadings_model`)
    weight: float = 1.0  # power on the expression likelihood (the EM fit's)
    classifier: jax.Array | None = None  # (n, K) the source classifier's term of each domain
    #   (`transst_bayes.classifier.domain_term`, weight included; None: none)


@contextmanager
def spot_plate(data: SpotData, batch_size):
    """The plate "spot" (subsampled to `batch_size`), yielding the spots' indices; rows with
    weight 0 in `data.w` (the padding of spots split over devices) are masked out of every site
    under it. A model of your own that takes `devices=` must put its per-spot sites under it."""
    with numpyro.plate("spot", data.X.shape[0], subsample_size=batch_size, dim=-1) as idx:
        if data.w is None:
            yield idx
        else:
            with numpyro.handlers.mask(mask=data.w[idx] > 0):
                yield idx


def _rows(a, idx):
    return None if a is None else a[idx]


def _integrated_spots(data: SpotData, W, K: int, n_factors: int, batch_size, domains="free",
                      kappa=None, psi=None):
    """Noise (unless `psi` is given), domain and smoothness priors, then each spot's expression
    with z integrated out and its domain summed out under the mean-field Potts field."""
    dt = data.X.dtype
    if psi is None:
        psi = noise_variances(data.X.shape[1], dt)
    mu, L = domain_distributions(K, n_factors, dt, data.prior, domains, kappa)
    beta = smoothness()
    comps = integrated_components(W, psi, mu, L)
    with spot_plate(data, batch_size) as idx:
        logits = mean_field_logits(beta, data.field[idx])
        numpyro.sample(S.X, DomainMixture(logits, comps, data.weight, _rows(data.classifier, idx)),
                       obs=data.X[idx])


def transst_model(data: SpotData, K: int, n_factors: int, batch_size=None, form: str = "global",
                  tau=None, tau_scale: float = 1.0, domains: str = "free", kappa=None):
    """TransST: loadings under the transfer prior (form "ridge" | "global" | "horseshoe"),
    z integrated out (Woodbury, `IntegratedFactors`), labels under the mean-field Potts prior.
    domains "anchored": the domains that data.prior marks are tied to their source classes,
    mu_k ~ N(m_c(k), kappa^2 I) with kappa ~ HalfCauchy(1) (or fixed `kappa=`)."""
    if data.W_s is None:
        raise ValueError("transst_model needs source loadings (data.W_s); use no_transfer_model")
    W = transfer_loadings(data.W_s, form=form, tau=tau, tau_scale=tau_scale)
    _integrated_spots(data, W, K, n_factors, batch_size, domains, kappa)


def scores_model(data: SpotData, K: int, n_factors: int, batch_size=None, domains: str = "free",
                 kappa=None):
    """The two-stage model (the default with a labeled source): data.X holds the target's
    factor scores under the loadings of the transfer step (n, q), clustered as
    v_j | y_j = k ~ N(mu_k, Sigma_k) under the mean-field Potts prior; the domains free or
    anchored to source classes as in `transst_model`. The loadings are not sites here: they
    stay at the transfer step's estimate."""
    dt = data.X.dtype
    mu, L = domain_distributions(K, n_factors, dt, data.prior, domains, kappa)
    beta = smoothness()
    with spot_plate(data, batch_size) as idx:
        logits = mean_field_logits(beta, data.field[idx])
        numpyro.sample(S.X, DomainMixture(logits, factor_components(mu, L), data.weight,
                                          _rows(data.classifier, idx)), obs=data.X[idx])


def no_transfer_model(data: SpotData, K: int, n_factors: int, batch_size=None):
    """The spatial factor model without a source (tau -> infinity), loadings W ~ N(0, 1).

    Its loadings are identified only up to an invertible q x q map (W A^-1 with A mu_k,
    A Sigma_k A^T fits equally well), which the EM path removes by whitening each step. A
    mean-field guide (AutoNormal) cannot follow that ridge and drifts to one tight domain
    holding every spot (HER2ST, every section): `fit_svi` fits `fixed_loadings_model` without
    a source; this model is for guides that can (AutoDelta) and for research."""
    W = free_loadings(data.X.shape[1], n_factors, dtype=data.X.dtype)
    _integrated_spots(data, W, K, n_factors, batch_size)


def fixed_loadings_model(data: SpotData, K: int, n_factors: int, batch_size=None):
    """The spatial factor model without a source with its loadings and noise fixed at data.W and
    data.psi (fit_svi's default without a source: the EM fit's whitened estimate, empirical
    Bayes on the factor model); the posterior is over the domains (mu_k, Sigma_k) and beta,
    z integrated out as in `transst_model`."""
    if data.W is None or data.psi is None:
        raise ValueError("fixed_loadings_model needs the loadings and noise in data.W and data.psi "
                         "(fit_svi passes an EM fit's); use no_transfer_model to learn them")
    _integrated_spots(data, data.W, K, n_factors, batch_size, psi=data.psi)


def explicit_z_model(data: SpotData, K: int, n_factors: int, batch_size=None, form: str = "global",
                     tau=None):
    """The same model with the factors z_j as explicit latent variables (for research: change
    the noise, the factor law, ...). The label is summed out in z_j's prior; x_j | z_j is
    Normal per gene."""
    n, p = data.X.shape
    dt = data.X.dtype
    if data.W_s is None:
        W = free_loadings(p, n_factors, dtype=dt)
    else:
        W = transfer_loadings(data.W_s, form=form, tau=tau)
    psi = noise_variances(p, dt)
    mu, L = domain_distributions(K, n_factors, dt, data.prior)
    beta = smoothness()
    with spot_plate(data, batch_size) as idx:
        logits = mean_field_logits(beta, data.field[idx])
        z = numpyro.sample(S.Z, DomainMixture(logits, factor_components(mu, L)))
        numpyro.sample(S.X, dist.Normal(z @ W.T, psi**0.5).to_event(1), obs=data.X[idx])
