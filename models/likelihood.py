"""Expression likelihoods of the factor model, with the domain label summed out per spot.

    x_j = W z_j + e_j,  e_j ~ N(0, diag(psi)),  z_j | y_j = k ~ N(mu_k, Sigma_k)

- `integrated_components`: z integrated out, x_j | y_j = k ~ N(W mu_k, W Sigma_k W^T + diag(psi)),
  scored by the Woodbury identity on products shared by the K domains (never a p x p matrix):
  `factor.components`, the same function the EM path uses.
- `factor_components`: the explicit-z form's prior on z_j, N(mu_k, Sigma_k).
- `DomainMixture`: NumPyro's MixtureSameFamily of the K components with each spot's prior
  logits over domains (the Potts mean-field field): the label summed out exactly. This is the per-spot
  enumeration that TraceEnum_ELBO would do (which needs funsor, not a dependency here).
  `domain_log_prob` gives log p(y_j = k, value_j): fitting code reads responsibilities from it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

from transst_bayes import factor as F


def integrated_components(W, psi, mu, scale_tril):
    """K components over x (batch (K,), event (p,)): N(W mu_k, W L_k L_k^T W^T + diag(psi))."""
    return IntegratedFactors(W, psi, mu, scale_tril)


class IntegratedFactors(dist.Distribution):
    """x | y = k ~ N(W mu_k, W L_k L_k^T W^T + diag(psi)) for k = 1..K (batch (K,), event (p,)).

    A spot's value broadcast against the K components (shape (..., 1, p), as DomainMixture
    passes it) is scored by `factor.components` (the EM path's Woodbury identity and determinant
    lemma on products shared by all components: X Psi^-1 W once (n p q), then K q x q systems),
    instead of NumPyro's per-component LowRankMultivariateNormal (n K p q). Any other value
    shape, and sampling, use the LowRankMultivariateNormal with the same parameters.
    """

    arg_constraints = {"W": constraints.real_matrix, "psi": constraints.positive,
                       "mu": constraints.real_matrix, "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    pytree_data_fields = ("W", "psi", "mu", "scale_tril")

    def __init__(self, W, psi, mu, scale_tril, validate_args=None):
        self.W, self.psi, self.mu, self.scale_tril = W, psi, mu, scale_tril
        super().__init__(batch_shape=jnp.shape(mu)[:-1], event_shape=jnp.shape(W)[:1],
                         validate_args=validate_args)

    def low_rank(self) -> dist.LowRankMultivariateNormal:
        loc = self.mu @ self.W.T  # (K, p)
        cov_factor = jnp.einsum("pq,kqr->kpr", self.W, self.scale_tril)  # (K, p, q)
        return dist.LowRankMultivariateNormal(loc, cov_factor, jnp.broadcast_to(self.psi, loc.shape))

    @property
    def mean(self):
        return self.mu @ self.W.T

    def sample(self, key, sample_shape=()):
        return self.low_rank().sample(key, sample_shape)

    def log_prob(self, value):
        if jnp.ndim(value) < 2 or jnp.shape(value)[-2] != 1 or jnp.ndim(self.psi) != 1:
            return self.low_rank().log_prob(value)
        X = value[..., 0, :]
        lead = X.shape[:-1]
        Sigma = self.scale_tril @ jnp.swapaxes(self.scale_tril, -1, -2)
        suf = F.precompute(X.reshape(-1, X.shape[-1]), self.W, self.psi)
        ll = F.components(suf, self.mu, Sigma, X.shape[-1], jitter=0.0).loglik  # the EM path's Woodbury
        return ll.reshape(lead + ll.shape[-1:])


def factor_components(mu, scale_tril):
    """K components over z (batch (K,), event (q,)): N(mu_k, L_k L_k^T)."""
    return dist.MultivariateNormal(mu, scale_tril=scale_tril)


@jax.jit
def _component_log_probs(logits, components, value, weight, extra):
    # one compiled call: eager evaluation (autoguide set-up) would otherwise compile op by op
    v = jnp.expand_dims(value, axis=-1 - len(components.event_shape))
    out = jax.nn.log_softmax(logits, axis=-1) + weight * components.log_prob(v)
    return out if extra is None else out + extra


class DomainMixture(dist.MixtureSameFamily):
    """p(v_j) = sum_k softmax(logits_j)_k p_k(v_j): the domain label summed out per spot.

    NumPyro's MixtureSameFamily with a categorical over domains: logits (..., K) per-spot prior
    logits, components a distribution with batch shape (K,) and the event shape of v.
    `domain_log_prob` (= `component_log_probs`) gives log p(y = k) + log p_k(value), one
    compiled call.

    The hybrid data term of the EM path (`transst_bayes.classifier`): `weight` a power on the
    components' likelihood and `extra` (..., K) a per-spot, per-domain term added to it (the
    source classifier's log-probabilities); then log_prob is the generalised (unnormalised)
    log sum_k softmax(logits)_k p_k(v)^weight exp(extra_k), which SVI fits like any
    log-density. Sampling ignores both.
    """

    pytree_data_fields = ("weight", "extra")

    def __init__(self, logits, components, weight=1.0, extra=None, validate_args=None):
        self.weight, self.extra = weight, extra
        super().__init__(dist.Categorical(logits=logits), components, validate_args=validate_args)

    def log_prob(self, value):
        if self.extra is None and isinstance(self.weight, float) and self.weight == 1.0:
            return super().log_prob(value)
        return jax.nn.logsumexp(self.component_log_probs(value), axis=-1)

    @property
    def logits(self):
        return self.mixing_distribution.logits

    @property
    def components(self):
        return self.component_distribution

    def component_log_probs(self, value):
        return _component_log_probs(self.logits, self.components, value, self.weight, self.extra)

    def domain_log_prob(self, value):
        """(..., K): log p(y = k) + log p_k(value)."""
        return self.component_log_probs(value)
