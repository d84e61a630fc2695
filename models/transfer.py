"""The transfer-shrinkage prior on the target loadings:

    W_t[g, :] ~ N(W_s[g, :], tau^2 phi_g^2 I_q)

in three forms (`form=`):
- "ridge": tau fixed (given), phi_g = 1. tau -> 0 copies the source; tau -> inf ignores it.
- "global": tau ~ HalfCauchy(tau_scale), phi_g = 1 (hierarchical global shrinkage).
- "horseshoe": tau ~ HalfCauchy(tau_scale), phi_g ~ HalfCauchy(1) per gene: single genes may break
  from the source; large posterior phi_g marks a transfer-breaking gene.
Sites: "tau", "phi" (plate "gene"), "W" (plates "gene" x "factor").
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from . import sites as S

FORMS = ("ridge", "global", "horseshoe")


def transfer_loadings(W_s, form: str = "global", tau=None, tau_scale: float = 1.0):
    """Sample the target loadings W (p, q) under the transfer prior centred on W_s."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    p, q = W_s.shape
    if form == "ridge":
        if tau is None or not float(tau) > 0:
            raise ValueError("form='ridge' needs a fixed tau > 0 (tau=...)")
        scale = jnp.asarray(tau, W_s.dtype)
    else:
        scale = numpyro.sample(S.TAU, dist.HalfCauchy(jnp.asarray(tau_scale, W_s.dtype)))
    with numpyro.plate("gene", p, dim=-2):
        if form == "horseshoe":
            scale = scale * numpyro.sample(S.PHI, dist.HalfCauchy(jnp.ones((), W_s.dtype)))
        with numpyro.plate("factor", q, dim=-1):
            return numpyro.sample(S.W, dist.Normal(W_s, scale))


def free_loadings(p: int, q: int, scale: float = 1.0, dtype=jnp.float32):
    """Loadings without a source: W[g, f] ~ N(0, scale^2) (the no-transfer model)."""
    with numpyro.plate("gene", p, dim=-2), numpyro.plate("factor", q, dim=-1):
        return numpyro.sample(S.W, dist.Normal(jnp.zeros((), dtype), jnp.asarray(scale, dtype)))
