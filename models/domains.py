"""Priors of the domain-level and noise parameters, shared by every model.

Sites: "psi" (plate "gene"), "mu" and "sigma" (plates "domain" x "factor"), "L_corr" (plate
"domain"), "beta". Sigma_k = diag(sigma_k) L_corr_k L_corr_k^T diag(sigma_k).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from .potts import BETA_MAX


def noise_variances(p: int, dtype=jnp.float32):
    """psi_g ~ InverseGamma(2, 1): weak, mean 1 on standardised genes. Site shape (p, 1)."""
    with numpyro.plate("gene", p, dim=-2):  # the same dim as in the loadings' plates
        psi = numpyro.sample("psi", dist.InverseGamma(jnp.asarray(2.0, dtype), jnp.asarray(1.0, dtype)))
    return psi[..., 0]


def domain_distributions(K: int, q: int, dtype=jnp.float32, mu_scale: float = 10.0,
                         sigma_scale: float = 10.0):
    """mu_k ~ N(0, mu_scale^2 I), sigma_kf ~ HalfNormal(sigma_scale), L_corr_k ~ LKJ(1).
    Returns mu (K, q) and the Cholesky factors of Sigma_k, (K, q, q). Plate dims: "gene" and
    "domain" -2, "factor" -1 in every model (autoguides need one dim per plate name)."""
    with numpyro.plate("domain", K, dim=-2), numpyro.plate("factor", q, dim=-1):
        mu = numpyro.sample("mu", dist.Normal(jnp.zeros((), dtype), jnp.asarray(mu_scale, dtype)))
        sigma = numpyro.sample("sigma", dist.HalfNormal(jnp.asarray(sigma_scale, dtype)))
    with numpyro.plate("domain", K, dim=-2):
        L = numpyro.sample("L_corr", dist.LKJCholesky(q, jnp.asarray(1.0, dtype)))[..., 0, :, :]
    return mu, sigma[..., :, None] * L


def smoothness():
    """beta ~ Uniform(0, BETA_MAX): the Potts smoothness, learned. The bounds are Python floats:
    a support with fixed bounds lets the guides constrain draws without re-running the model."""
    return numpyro.sample("beta", dist.Uniform(0.0, float(BETA_MAX)))
