"""Priors of the domain-level and noise parameters, shared by every model.

The distributions and constants are those of `transst_bayes.priors`, whose closed-form MAP steps
the EM path uses: both paths fit one posterior.
Sites: "psi" (plate "gene"), "mu" (plates "domain" x "factor"), "Sigma" (plate "domain"),
"kappa" (anchored domains, unless fixed), "beta".
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from transst_bayes import priors as P

from . import sites as S
from .potts import BETA_MAX

DOMAIN_FORMS = ("free", "anchored")


def noise_variances(p: int, dtype=jnp.float32):
    """psi_g ~ InverseGamma(PSI_A, PSI_B) (2, 1: weak, mean 1 on standardised genes). Site shape (p, 1)."""
    with numpyro.plate("gene", p, dim=-2):  # the same dim as in the loadings' plates
        psi = numpyro.sample(S.PSI, dist.InverseGamma(jnp.asarray(P.PSI_A, dtype), jnp.asarray(P.PSI_B, dtype)))
    return psi[..., 0]


def domain_distributions(K: int, q: int, dtype=jnp.float32, prior: P.DomainPrior | None = None,
                         form: str = "free", kappa=None, kappa_scale: float = 1.0):
    """mu_k ~ N(m_k, s_k^2 I), Sigma_k ~ InverseWishart(nu, (nu + q + 1) C_k) (`priors`).

    form "free": every domain free (m_k = 0, s_k = MU_SCALE, C_k = FREE_COV I) unless `prior`
    says otherwise; "anchored": the domains that `prior.anchored` marks have s_k = kappa, with
    kappa ~ HalfCauchy(kappa_scale) or fixed (`kappa=`). Returns mu (K, q) and the Cholesky
    factors of Sigma_k (K, q, q). Plate dims: "gene" and "domain" -2, "factor" -1 in every model
    (autoguides need one dim per plate name)."""
    if form not in DOMAIN_FORMS:
        raise ValueError(f"domain form must be one of {DOMAIN_FORMS}, got {form!r}")
    prior = P.free_prior(K, q, dtype) if prior is None else prior
    if form == "anchored":
        if kappa is None:
            kappa = numpyro.sample(S.KAPPA, dist.HalfCauchy(jnp.asarray(kappa_scale, dtype)))
        scale = jnp.sqrt(P.mean_scale2(prior, jnp.asarray(kappa, dtype) ** 2))
    else:
        scale = jnp.full((K,), P.MU_SCALE, dtype)
    nu = P.sigma_dof(q)
    with numpyro.plate("domain", K, dim=-2):
        with numpyro.plate("factor", q, dim=-1):
            mu = numpyro.sample(S.MU, dist.Normal(prior.mean, scale[:, None]))
        Sigma = numpyro.sample(S.SIGMA, dist.InverseWishart(
            jnp.asarray(nu, dtype), scale_matrix=(nu + q + 1.0) * prior.cov[:, None]))[..., 0, :, :]
    return mu, jnp.linalg.cholesky(Sigma)


def smoothness():
    """beta ~ Uniform(0, BETA_MAX): the Potts smoothness, learned. The bounds are Python floats:
    a support with fixed bounds lets the guides constrain draws without re-running the model."""
    return numpyro.sample(S.BETA, dist.Uniform(0.0, float(BETA_MAX)))
