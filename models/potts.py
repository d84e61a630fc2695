"""The Potts label prior as a NumPyro distribution.

`Potts(beta, graph, K)` is the distribution of the whole label vector y (event shape (n,)) on a
spatial graph:

    p(y | beta) ∝ exp(beta * #{edges (i, j) with y_i = y_j})

Its normaliser is intractable, so `log_prob` is the pseudo-log-likelihood
sum_j log p(y_j | y_N(j), beta) (Besag), and `sample` runs chromatic Gibbs sweeps. Both come from
the one Potts module of the package (`transst_bayes.mrf`); nothing is re-implemented here.

Inside the SVI models the labels are summed out per spot under the mean-field form of the same
prior: p(y_j = k | neighbours) = softmax_k(beta * sum_{i ~ j} r_ik), with r the current
responsibilities (`mean_field_logits`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

from transst_bayes import mrf

BETA_MAX = mrf.BETA_MAX


Graph = mrf.Graph  # the package's one graph type (JAX arrays here: `mrf.on_device`)


def mean_field_logits(beta, field):
    """Per-spot prior logits of the domain under the mean-field Potts form: beta * field,
    with field[j, k] = sum_{i ~ j} r_ik."""
    return beta * field


class Potts(dist.Distribution):
    """Potts distribution over labels y in {0..K-1}^n on `graph`, smoothness `beta` >= 0."""

    arg_constraints = {"beta": constraints.nonnegative}
    pytree_data_fields = ("beta",)
    pytree_aux_fields = ("graph", "K", "n_sweeps")

    def __init__(self, beta, graph: Graph, K: int, n_sweeps: int = 100, validate_args=None):
        self.beta = jnp.asarray(beta)
        self.graph = graph
        self.K = int(K)
        self.n_sweeps = int(n_sweeps)
        n = graph.nbr.shape[0]
        super().__init__(batch_shape=jnp.shape(self.beta), event_shape=(n,),
                         validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.K - 1), 1)

    def log_prob(self, value):
        """Pseudo-log-likelihood of the labels `value` (n,) (or a batch (..., n))."""
        g = self.graph

        def one(y, beta):
            oh = jax.nn.one_hot(y, self.K, dtype=g.mask.dtype)
            counts = mrf.neighbour_sums(oh, g.nbr, g.mask)
            return mrf.pseudo_loglik(beta, oh, counts)

        value = jnp.asarray(value)
        batch = jnp.broadcast_shapes(value.shape[:-1], self.batch_shape)
        y = jnp.broadcast_to(value, batch + value.shape[-1:]).reshape(-1, value.shape[-1])
        b = jnp.broadcast_to(self.beta, batch).reshape(-1)
        return jax.vmap(one)(y, b).reshape(batch)

    def sample(self, key, sample_shape=()):
        g = self.graph
        shape = tuple(sample_shape) + self.batch_shape
        betas = jnp.broadcast_to(self.beta, shape).reshape(-1)
        keys = jax.random.split(key, betas.shape[0])

        def one(k, b):
            return mrf.sample(k, g.nbr, g.mask, g.colors, g.n_colors, b, self.K,
                                 n_sweeps=self.n_sweeps)

        out = jax.vmap(one)(keys, betas)
        return out.reshape(shape + self.event_shape)

    def mean_field(self, field):
        """The per-spot mean-field conditionals as a Categorical with batch shape (n,)."""
        return dist.Categorical(logits=mean_field_logits(self.beta, field))
