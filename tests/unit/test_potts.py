"""The Potts module against brute force and its known behaviour."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transst_bayes import mrf
from transst_bayes.graph import lattice_adjacency, pad_graph


def _graph(h, w):
    g = pad_graph(lattice_adjacency(h, w), warn_isolated=False)
    return jnp.asarray(g.nbr), jnp.asarray(g.mask), jnp.asarray(g.colors), g.n_colors


def _brute_energy(y, h, w, beta, alpha):
    y = np.asarray(y).reshape(h, w)
    same = sum(y[i, j] == y[i, j + 1] for i in range(h) for j in range(w - 1))
    same += sum(y[i, j] == y[i + 1, j] for i in range(h - 1) for j in range(w))
    return -(beta * same + sum(alpha[v] for v in y.ravel()))


def test_energy_matches_brute_force_on_3x3():
    nbr, mask, _, _ = _graph(3, 3)
    rng = np.random.default_rng(0)
    alpha = np.array([0.3, -0.2, 0.5])
    for _ in range(50):
        y = rng.integers(0, 3, 9)
        e = float(mrf.energy(jnp.asarray(y), nbr, mask, 0.7, jnp.asarray(alpha)))
        assert e == pytest.approx(_brute_energy(y, 3, 3, 0.7, alpha), abs=1e-5)


def test_pseudo_likelihood_matches_brute_force_conditionals():
    """p(y_j | y_-j) from the full joint by enumeration equals the pseudo-likelihood terms."""
    h, w, K, beta = 2, 3, 2, 0.8
    nbr, mask, _, _ = _graph(h, w)
    alpha = jnp.array([0.2, -0.1])
    configs = np.array(list(itertools.product(range(K), repeat=h * w)))
    logp = np.array([-float(mrf.energy(jnp.asarray(c), nbr, mask, beta, alpha)) for c in configs])
    y = configs[13]
    brute = 0.0
    for j in range(h * w):
        same = np.all(np.delete(configs, j, 1) == np.delete(y, j), axis=1)
        lp = logp[same]
        brute += logp[same & (configs[:, j] == y[j])][0] - np.logaddexp.reduce(lp)
    counts = mrf.label_counts(jnp.asarray(y), nbr, mask, K)
    pl = float(mrf.pseudo_loglik(beta, jax.nn.one_hot(y, K), counts, alpha))
    assert pl == pytest.approx(brute, abs=1e-5)


def test_icm_sweep_never_raises_energy():
    nbr, mask, colors, nc = _graph(12, 12)
    rng = np.random.default_rng(1)
    K = 4
    loglik = jnp.asarray(rng.normal(size=(144, K)) * 2.0)
    y = jnp.asarray(rng.integers(0, K, 144))

    def total(y):
        return float(mrf.energy(y, nbr, mask, 1.2) - jnp.sum(loglik[jnp.arange(144), y]))

    prev = total(y)
    for _ in range(10):
        y = mrf.icm_sweep(y, loglik, nbr, mask, colors, nc, 1.2)
        cur = total(y)
        assert cur <= prev + 1e-6
        prev = cur


def test_coloring_is_proper():
    nbr, mask, colors, _ = _graph(10, 7)
    c = np.asarray(colors)
    assert not np.any((c[np.asarray(nbr)] == c[:, None]) & (np.asarray(mask) > 0))


@pytest.mark.parametrize("beta, lo, hi", [(0.0, 0.20, 0.30), (3.0, 0.9, 1.0)])
def test_same_label_fraction_with_beta(beta, lo, hi):
    nbr, mask, colors, nc = _graph(30, 30)
    y = mrf.sample(jax.random.PRNGKey(0), nbr, mask, colors, nc, beta, 4, n_sweeps=100)
    frac = float(mrf.same_label_fraction(y, nbr, mask))
    assert lo <= frac <= hi


@pytest.mark.parametrize("beta_true", [0.6, 1.0])
def test_pseudo_likelihood_recovers_beta(beta_true):
    nbr, mask, colors, nc = _graph(50, 50)
    y = mrf.sample(jax.random.PRNGKey(3), nbr, mask, colors, nc, beta_true, 4, n_sweeps=300)
    counts = mrf.label_counts(y, nbr, mask, 4)
    b = float(mrf.newton_beta(0.2, jax.nn.one_hot(y, 4), counts, n_steps=20))
    assert abs(b - beta_true) < 0.2


def test_mean_field_rows_are_distributions():
    nbr, mask, colors, nc = _graph(8, 8)
    rng = np.random.default_rng(2)
    loglik = jnp.asarray(rng.normal(size=(64, 3)))
    r = jnp.full((64, 3), 1 / 3)
    r = mrf.mean_field_sweep(r, loglik, nbr, mask, colors, nc, 1.0)
    np.testing.assert_allclose(np.asarray(r).sum(1), 1.0, atol=1e-5)
    assert np.all(np.asarray(r) > 0)
