"""The NumPyro model pieces in models/: Potts distribution and the per-spot domain mixture
against brute force on tiny cases."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from transst_bayes import graph as G
from transst_bayes import models as M
from transst_bayes import mrf


def _grid_graph(h, w):
    pg = G.pad_graph(G.lattice_adjacency(h, w))
    return M.Graph(jnp.asarray(pg.nbr), jnp.asarray(pg.mask, jnp.float32), jnp.asarray(pg.colors),
                   pg.n_colors), pg


def test_potts_log_prob_is_brute_force_pseudo_likelihood():
    g, pg = _grid_graph(3, 3)
    K, beta = 3, 0.8
    d = M.Potts(beta, g, K)
    adj = [[int(j) for j, m in zip(pg.nbr[i], pg.mask[i]) if m > 0] for i in range(9)]
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, K, 9)
        ref = 0.0
        for j in range(9):
            f = np.array([beta * sum(y[i] == k for i in adj[j]) for k in range(K)])
            ref += f[y[j]] - np.log(np.exp(f).sum())
        np.testing.assert_allclose(float(d.log_prob(jnp.asarray(y))), ref, rtol=1e-5)


def test_potts_pseudo_likelihood_orders_configurations_like_the_energy_on_2x2():
    # on a 2 x 2 grid the all-equal configurations have the lowest energy and the largest
    # pseudo-likelihood for beta > 0; check over all 2^4 configurations
    g, pg = _grid_graph(2, 2)
    d = M.Potts(1.0, g, 2)
    ys = np.array(list(itertools.product([0, 1], repeat=4)))
    lp = np.asarray(d.log_prob(jnp.asarray(ys)))
    en = np.array([float(mrf.energy(jnp.asarray(y), g.nbr, g.mask, 1.0)) for y in ys])
    assert lp.shape == (16,)
    assert set(np.flatnonzero(lp == lp.max())) == set(np.flatnonzero(en == en.min()))


def test_potts_sampler_same_label_fraction_rises_with_beta():
    g, _ = _grid_graph(30, 30)
    fr = []
    for beta in (0.0, 0.7, 1.5):
        y = M.Potts(beta, g, 4, n_sweeps=60).sample(jax.random.PRNGKey(1))
        assert y.shape == (900,) and int(y.min()) >= 0 and int(y.max()) < 4
        fr.append(float(mrf.same_label_fraction(y, g.nbr, g.mask)))
    assert fr[0] < 0.35 and fr[0] < fr[1] < fr[2] and fr[2] > 0.8


def test_domain_mixture_matches_dense_mixture():
    rng = np.random.default_rng(0)
    n, p, q, K = 7, 6, 2, 3
    W = rng.normal(size=(p, q))
    psi = rng.uniform(0.5, 1.5, p)
    mu = rng.normal(size=(K, q))
    L = np.tril(rng.normal(size=(K, q, q))) + 2 * np.eye(q)
    logits = rng.normal(size=(n, K))
    x = rng.normal(size=(n, p))
    with jax.enable_x64(True):
        comps = M.integrated_components(jnp.asarray(W), jnp.asarray(psi), jnp.asarray(mu), jnp.asarray(L))
        d = M.DomainMixture(jnp.asarray(logits), comps)
        dlp = np.asarray(d.domain_log_prob(jnp.asarray(x)))
        lp = np.asarray(d.log_prob(jnp.asarray(x)))
        s = d.sample(jax.random.PRNGKey(0), (5,))
    logw = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ref = np.stack([multivariate_normal(W @ mu[k], W @ L[k] @ L[k].T @ W.T + np.diag(psi)).logpdf(x)
                    for k in range(K)], axis=1) + logw
    np.testing.assert_allclose(dlp, ref, rtol=1e-8)
    np.testing.assert_allclose(lp, np.log(np.exp(ref).sum(1)), rtol=1e-8)
    assert s.shape == (5, n, p)


@pytest.mark.slow
def test_shared_woodbury_equals_low_rank_normal_with_gradients():
    rng = np.random.default_rng(1)
    n, p, q, K = 9, 8, 3, 4
    args = (rng.normal(size=(p, q)), rng.uniform(0.3, 2.0, p), rng.normal(size=(K, q)),
            np.tril(rng.normal(size=(K, q, q))) + 1.5 * np.eye(q))
    x = rng.normal(size=(n, 1, p))
    with jax.enable_x64(True):
        args = tuple(map(jnp.asarray, args))

        def shared(*a):
            return M.integrated_components(*a).log_prob(x).sum()

        def dense(*a):
            return M.integrated_components(*a).low_rank().log_prob(x).sum()

        np.testing.assert_allclose(shared(*args), dense(*args), rtol=1e-10)
        for gs, gd in zip(jax.grad(shared, argnums=(0, 1, 2, 3))(*args),
                          jax.grad(dense, argnums=(0, 1, 2, 3))(*args)):
            np.testing.assert_allclose(gs, gd, rtol=1e-8, atol=1e-10)
        per_k = M.integrated_components(*args).log_prob(jnp.broadcast_to(x, (n, K, p)))
        np.testing.assert_allclose(per_k, M.integrated_components(*args).log_prob(x), rtol=1e-10)


def test_transfer_prior_rejects_bad_form():
    with pytest.raises(ValueError, match="form"):
        M.transfer_loadings(jnp.zeros((3, 2)), form="lasso")
    with pytest.raises(ValueError, match="tau"):
        M.transfer_loadings(jnp.zeros((3, 2)), form="ridge")


def test_the_ridge_transfer_prior_is_the_em_paths_log_prior_and_its_map_step_maximises_it():
    """One transfer prior for both paths: the NumPyro ridge form's density of W is
    priors.loadings_log_prior, and the EM path's ridge step (priors.update_loadings) is the
    maximiser of that prior plus the expected Gaussian log-likelihood (its gradient is zero)."""
    from numpyro import handlers

    from transst_bayes import factor as F
    from transst_bayes import priors as P

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        p, q, n, tau = 7, 3, 40, 0.4
        W_s = jnp.asarray(rng.normal(size=(p, q)))
        W = jnp.asarray(rng.normal(size=(p, q)))
        tr = handlers.trace(handlers.substitute(lambda: M.transfer_loadings(W_s, form="ridge", tau=tau),
                                                data={"W": W})).get_trace()
        numpyro_lp = float(jnp.sum(tr["W"]["fn"].log_prob(tr["W"]["value"])))
        np.testing.assert_allclose(numpyro_lp, float(P.loadings_log_prior(W, W_s, tau**2)), rtol=1e-12)

        # statistics of known factors (Vz = 0): the ridge step maximises loglik + log prior
        Z, X = rng.normal(size=(n, q)), rng.normal(size=(n, p))
        psi = jnp.asarray(rng.uniform(0.5, 2.0, size=p))
        st = F.LoadingStats(XtEz=jnp.asarray(X.T @ Z), G=jnp.asarray(Z.T @ Z), xx=jnp.asarray((X * X).sum(0)),
                            n=jnp.asarray(float(n)))
        W_map = P.update_loadings(st, W_s, psi / tau**2)

        def objective(W):
            return -0.5 * jnp.sum(F.residual_ss(st, W) / psi) + P.loadings_log_prior(W, W_s, tau**2)

        grad = jax.grad(objective)(W_map)
        assert float(jnp.abs(grad).max()) < 1e-8
        assert float(objective(W_map)) > float(objective(W_map + 0.01))
