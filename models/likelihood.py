"""Expression likelihoods of the factor model, with the domain label summed out per spot.

    x_j = W z_j + e_j,  e_j ~ N(0, diag(psi)),  z_j | y_j = k ~ N(mu_k, Sigma_k)

- `integrated_components`: z integrated out, x_j | y_j = k ~ N(W mu_k, W Sigma_k W^T + diag(psi))
  as NumPyro's LowRankMultivariateNormal (Woodbury inside; never a p x p matrix).
- `factor_components`: the explicit-z form's prior on z_j, N(mu_k, Sigma_k).
- `DomainMixture`: a spot's value under the K components with that spot's prior logits over
  domains (the Potts mean-field field), the label summed out exactly. This is the per-spot
  enumeration that TraceEnum_ELBO would do (which needs funsor, not a dependency here).
  `domain_log_prob` gives log p(y_j = k, value_j): fitting code reads responsibilities from it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints


def integrated_components(W, psi, mu, scale_tril):
    """K components over x (batch (K,), event (p,)): N(W mu_k, W L_k L_k^T W^T + diag(psi))."""
    loc = mu @ W.T  # (K, p)
    cov_factor = jnp.einsum("pq,kqr->kpr", W, scale_tril)  # (K, p, q)
    return dist.LowRankMultivariateNormal(loc, cov_factor, jnp.broadcast_to(psi, loc.shape))


def factor_components(mu, scale_tril):
    """K components over z (batch (K,), event (q,)): N(mu_k, L_k L_k^T)."""
    return dist.MultivariateNormal(mu, scale_tril=scale_tril)


@jax.jit
def _domain_log_prob(logits, components, value):
    # one compiled call: eager evaluation (autoguide set-up) would otherwise compile op by op
    v = jnp.expand_dims(value, axis=-1 - len(components.event_shape))
    return jax.nn.log_softmax(logits, axis=-1) + components.log_prob(v)


class DomainMixture(dist.Distribution):
    """p(v_j) = sum_k softmax(logits_j)_k p_k(v_j): the domain label summed out per spot.

    logits: (..., K) per-spot prior logits; components: a distribution with batch shape (K,)
    and the event shape of v.
    """

    arg_constraints = {"logits": constraints.real_vector}
    pytree_data_fields = ("logits", "components")

    def __init__(self, logits, components, validate_args=None):
        self.logits = logits
        self.components = components
        super().__init__(batch_shape=jnp.shape(logits)[:-1],
                         event_shape=components.event_shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return self.components.support

    def domain_log_prob(self, value):
        """(..., K): log p(y = k) + log p_k(value)."""
        return _domain_log_prob(self.logits, self.components, value)

    def log_prob(self, value):
        return logsumexp(self.domain_log_prob(value), axis=-1)

    def sample(self, key, sample_shape=()):
        k_y, k_v = jax.random.split(key)
        y = dist.Categorical(logits=self.logits).sample(k_y, sample_shape)
        shape = tuple(sample_shape) + self.batch_shape
        v = self.components.sample(k_v, shape)  # shape + (K,) + event
        ev = len(self.event_shape)
        idx = y.reshape(y.shape + (1,) * (ev + 1))
        return jnp.take_along_axis(v, idx, axis=len(shape)).squeeze(len(shape))
