"""The one Potts module: used by the EM path, the simulator, the NumPyro prior and the tests.

    p(y | alpha, beta) ∝ exp( sum_j alpha[y_j] + beta * sum_{(i,j) in E} 1[y_i = y_j] )

The graph (`Graph`) is a padded neighbour array `nbr[n, D]` with `mask[n, D]` and a colouring
`colors[n]` (built by graph.py); the kernels take its arrays. Label arrays are int; "soft" labels are (n, K) responsibilities. All functions
are pure and jit-able; loops over colour classes are `lax.fori_loop`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BETA_MAX = 6.0


class Graph(NamedTuple):
    """The spots' neighbour graph (the one graph type of the package): padded neighbour lists
    (`graph.pad_graph` builds them from an adjacency matrix) and a proper colouring. NumPy
    arrays as built; `on_device` gives the JAX form the kernels take."""
    nbr: object  # (n, D) int32 neighbour indices, padding = the spot itself
    mask: object  # (n, D) 1.0 for a real neighbour, 0.0 for padding
    colors: object  # (n,) int32 colour classes: neighbours never share one
    n_colors: int


def widen(g: Graph, degree: int, n_colors: int) -> Graph:
    """`g` with each neighbour list padded to at least `degree` entries (masked: the spot itself)
    and at least `n_colors` colour classes (the added ones hold no spot): the same Potts field,
    so fits of graphs whose widest list or colouring differ can share compiled programs."""
    nbr, mask = np.asarray(g.nbr), np.asarray(g.mask)
    n, d = nbr.shape
    if degree > d:
        nbr = np.concatenate([nbr, np.repeat(np.arange(n, dtype=nbr.dtype)[:, None], degree - d, axis=1)], axis=1)
        mask = np.concatenate([mask, np.zeros((n, degree - d), mask.dtype)], axis=1)
    return Graph(nbr, mask, g.colors, max(int(n_colors), int(g.n_colors)))


def on_device(g: Graph, dtype=jnp.float32) -> Graph:
    """`g` with JAX arrays (mask in `dtype`); n_colors stays a Python int."""
    return Graph(jnp.asarray(g.nbr), jnp.asarray(g.mask, dtype), jnp.asarray(g.colors), int(g.n_colors))


def neighbour_sums(r: jax.Array, nbr: jax.Array, mask: jax.Array) -> jax.Array:
    """n_j(k) = sum_{i in N(j)} r_ik for soft (n, K) or one-hot labels."""
    return jnp.einsum("nd,ndk->nk", mask.astype(r.dtype), r[nbr])


def label_counts(labels: jax.Array, nbr: jax.Array, mask: jax.Array, K: int) -> jax.Array:
    """Number of neighbours of each spot carrying each label, (n, K)."""
    return neighbour_sums(jax.nn.one_hot(labels, K, dtype=mask.dtype), nbr, mask)


def energy(labels, nbr, mask, beta, alpha=None) -> jax.Array:
    """Potts energy -(sum_j alpha[y_j] + beta * #{edges with equal labels}); each edge once."""
    same = (labels[nbr] == labels[:, None]).astype(mask.dtype) * mask
    e = -beta * 0.5 * jnp.sum(same)
    if alpha is not None:
        e = e - jnp.sum(alpha[labels])
    return e


def local_field(loglik, counts, beta, alpha=None):
    """Conditional log-weights of each label at each spot: loglik + alpha + beta * counts."""
    f = beta * counts
    if loglik is not None:
        f = f + loglik
    if alpha is not None:
        f = f + alpha
    return f


def icm_sweep(labels, loglik, nbr, mask, colors, n_colors, beta, alpha=None):
    """One chromatic ICM sweep: each colour class takes its conditional argmax in turn.

    Exact sequential semantics (neighbours never share a colour), so the total
    -sum loglik[y] + energy never increases.
    """
    K = loglik.shape[1]

    def body(c, y):
        counts = label_counts(y, nbr, mask, K)
        new = jnp.argmax(local_field(loglik, counts, beta, alpha), axis=1).astype(y.dtype)
        return jnp.where(colors == c, new, y)

    return lax.fori_loop(0, n_colors, body, labels)


def icm(labels, loglik, nbr, mask, colors, n_colors, beta, alpha=None, max_sweeps=50):
    """ICM sweeps until no label changes (or max_sweeps)."""

    def cond(state):
        _, changed, it = state
        return jnp.logical_and(changed, it < max_sweeps)

    def body(state):
        y, _, it = state
        y_new = icm_sweep(y, loglik, nbr, mask, colors, n_colors, beta, alpha)
        return y_new, jnp.any(y_new != y), it + 1

    y, _, _ = lax.while_loop(cond, body, (labels, jnp.array(True), jnp.array(0)))
    return y


def mean_field_sweep(r, loglik, nbr, mask, colors, n_colors, beta, alpha=None):
    """Chromatic mean-field update r_jk ∝ exp(loglik_jk + alpha_k + beta * sum_{i~j} r_ik)."""

    def body(c, r):
        counts = neighbour_sums(r, nbr, mask)
        new = jax.nn.softmax(local_field(loglik, counts, beta, alpha), axis=1)
        return jnp.where((colors == c)[:, None], new, r)

    return lax.fori_loop(0, n_colors, body, r)


def gibbs_sweep(key, labels, loglik, nbr, mask, colors, n_colors, beta, alpha=None, K=None):
    """One chromatic Gibbs sweep under the Potts prior (times exp(loglik) if given)."""
    if K is None:
        K = loglik.shape[1]
    keys = jax.random.split(key, n_colors)

    def body(c, y):
        counts = label_counts(y, nbr, mask, K)
        new = jax.random.categorical(keys[c], local_field(loglik, counts, beta, alpha), axis=1)
        return jnp.where(colors == c, new.astype(y.dtype), y)

    return lax.fori_loop(0, n_colors, body, labels)


def sample(key, nbr, mask, colors, n_colors, beta, K, n_sweeps=200, alpha=None, loglik=None):
    """Draw labels from the Potts model by chromatic Gibbs from a uniform random start."""
    k0, key = jax.random.split(key)
    y = jax.random.randint(k0, (nbr.shape[0],), 0, K)

    def body(i, state):
        y, key = state
        key, sub = jax.random.split(key)
        return gibbs_sweep(sub, y, loglik, nbr, mask, colors, n_colors, beta, alpha, K), key

    y, _ = lax.fori_loop(0, n_sweeps, body, (y, key))
    return y


def pseudo_loglik(beta, r, counts, alpha=None, weights=None):
    """Pseudo-log-likelihood sum_j sum_k r_jk log softmax_k(alpha + beta * n_j)_k.

    With hard labels pass one-hot `r` and `counts = label_counts(...)`; in the mean-field form
    pass responsibilities and their neighbour sums. Concave in beta.
    """
    lp = jax.nn.log_softmax(local_field(None, counts, beta, alpha), axis=1)
    per_spot = jnp.sum(r * lp, axis=1)
    if weights is not None:
        per_spot = per_spot * weights
    return jnp.sum(per_spot)


def newton_beta(beta, r, counts, alpha=None, n_steps=5, beta_max=BETA_MAX):
    """Newton steps on the (concave) pseudo-likelihood of beta, kept in [0, beta_max]."""
    g = jax.grad(pseudo_loglik)
    h = jax.grad(g)

    def body(i, b):
        gb = g(b, r, counts, alpha)
        hb = h(b, r, counts, alpha)
        step = jnp.where(hb < -1e-8, -gb / hb, jnp.sign(gb) * 0.5)
        step = jnp.clip(step, -1.0, 1.0)
        return jnp.clip(b + step, 0.0, beta_max)

    return lax.fori_loop(0, n_steps, body, jnp.asarray(beta, dtype=r.dtype))


def same_label_fraction(labels, nbr, mask) -> jax.Array:
    """Fraction of graph edges whose two ends carry the same label."""
    same = (labels[nbr] == labels[:, None]).astype(mask.dtype) * mask
    return jnp.sum(same) / jnp.maximum(jnp.sum(mask), 1.0)
