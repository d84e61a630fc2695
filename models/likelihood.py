"""Expression likelihoods of the factor model, with the domain label summed out per spot.

    x_j = W z_j + e_j,  e_j ~ N(0, diag(psi)),  z_j | y_j = k ~ N(mu_k, Sigma_k)

- `integrated_components`: z integrated out, x_j | y_j = k ~ N(W mu_k, W Sigma_k W^T + diag(psi)),
  scored by the Woodbury identity on products shared by the K domains (never a p x p matrix).
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

from transst_bayes import factor as F


def integrated_components(W, psi, mu, scale_tril):
    """K components over x (batch (K,), event (p,)): N(W mu_k, W L_k L_k^T W^T + diag(psi))."""
    return IntegratedFactors(W, psi, mu, scale_tril)


class IntegratedFactors(dist.Distribution):
    """x | y = k ~ N(W mu_k, W L_k L_k^T W^T + diag(psi)) for k = 1..K (batch (K,), event (p,)).

    A spot's value broadcast against the K components (shape (..., 1, p), as DomainMixture
    passes it) is scored with the Woodbury identity on products shared by all components:
    X Psi^-1 W once (n p q), then K capacitance matrices I + L_k^T W^T Psi^-1 W L_k (n K q^2),
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
        ll = _shared_woodbury(X.reshape(-1, X.shape[-1]), self.W, self.psi, self.mu, self.scale_tril)
        return ll.reshape(lead + ll.shape[-1:])


def _shared_woodbury(X, W, psi, mu, scale_tril):
    """(n, K) log N(x_j | W mu_k, F_k F_k^T + Psi), F_k = W L_k, by the Woodbury identity and the
    matrix determinant lemma with capacitance C_k = I + F_k^T Psi^-1 F_k."""
    suf = F.precompute(X, W, psi)  # A = W^T Psi^-1 W, b = X Psi^-1 W, x^T Psi^-1 x, log|Psi|
    p, q = W.shape
    eye = jnp.eye(q, dtype=X.dtype)

    def one(m, L):
        Lc = jnp.linalg.cholesky(eye + L.T @ suf.A @ L)
        c = (suf.b - m @ suf.A) @ L  # (n, q): F_k^T Psi^-1 (x - W m_k)
        y = jax.scipy.linalg.solve_triangular(Lc, c.T, lower=True)
        quad = suf.xPx - 2.0 * suf.b @ m + m @ suf.A @ m - jnp.sum(y * y, axis=0)
        logdet = suf.logdet_psi + 2.0 * jnp.sum(jnp.log(jnp.diag(Lc)))
        return -0.5 * (p * F.LOG2PI + logdet + quad)

    return jax.vmap(one, out_axes=1)(mu, scale_tril)


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
