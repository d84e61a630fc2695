"""Factor-model kernels against direct (brute-force) formulas on small random problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transst_bayes import factor as F
from transst_bayes import priors as P


def _problem(seed=0, n=40, p=12, q=3, K=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(p, q))
    psi = rng.uniform(0.3, 2.0, size=p)
    mu = rng.normal(size=(K, q)) * 2
    A = rng.normal(size=(K, q, q))
    Sigma = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(q)
    R = rng.dirichlet(np.ones(K), size=n)
    return X, W, psi, mu, Sigma, R


def test_components_match_dense_gaussian():
    from scipy.stats import multivariate_normal

    with jax.enable_x64(True):
        X, W, psi, mu, Sigma, R = _problem()
        comp = F.components(F.precompute(jnp.asarray(X), jnp.asarray(W), jnp.asarray(psi)),
                            jnp.asarray(mu), jnp.asarray(Sigma), X.shape[1])
        for k in range(mu.shape[0]):
            C = W @ Sigma[k] @ W.T + np.diag(psi)
            ll = multivariate_normal(W @ mu[k], C).logpdf(X)
            np.testing.assert_allclose(np.asarray(comp.loglik[:, k]), ll, rtol=1e-5)  # JITTER = 1e-6 on S and M
            # E[z | x, k] = mu + Sigma W^T C^-1 (x - W mu)
            Ez = mu[k] + (X - W @ mu[k]) @ np.linalg.solve(C, W @ Sigma[k])
            np.testing.assert_allclose(np.asarray(comp.Ez[:, k]), Ez, rtol=1e-5, atol=1e-6)
            Vz = Sigma[k] - Sigma[k] @ W.T @ np.linalg.solve(C, W @ Sigma[k])
            np.testing.assert_allclose(np.asarray(comp.Vz[k]), Vz, rtol=1e-5, atol=1e-6)


def test_moments_match_explicit_sums():
    with jax.enable_x64(True):
        X, W, psi, mu, Sigma, R = _problem(1)
        comp = F.components(F.precompute(jnp.asarray(X), jnp.asarray(W), jnp.asarray(psi)),
                            jnp.asarray(mu), jnp.asarray(Sigma), X.shape[1])
        Ez = np.asarray(comp.Ez)
        mom = F.moments(jnp.asarray(R), comp)
        np.testing.assert_allclose(np.asarray(mom.Nk), R.sum(0), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(mom.S1), np.einsum("nk,nkq->kq", R, Ez), rtol=1e-9)
        np.testing.assert_allclose(np.asarray(mom.S2), np.einsum("nk,nkq,nkr->kqr", R, Ez, Ez),
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(F.mean_factors(jnp.asarray(R), comp)),
                                   np.einsum("nk,nkq->nq", R, Ez), rtol=1e-9, atol=1e-12)
        st = F.loading_stats(jnp.asarray(X), jnp.asarray(R), comp)
        G = np.einsum("nk,nkq,nkr->qr", R, Ez, Ez) + np.einsum("k,kqr->qr", R.sum(0), np.asarray(comp.Vz))
        np.testing.assert_allclose(np.asarray(st.G), G, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(st.XtEz), X.T @ np.einsum("nk,nkq->nq", R, Ez), rtol=1e-9)


def test_class_moments_are_weighted_moments():
    with jax.enable_x64(True):
        X, W, psi, mu, Sigma, R = _problem(2)
        comp = F.components(F.precompute(jnp.asarray(X), jnp.asarray(W), jnp.asarray(psi)),
                            jnp.asarray(mu), jnp.asarray(Sigma), X.shape[1])
        Ez = np.asarray(comp.Ez)
        m, S = F.class_moments(jnp.asarray(R), comp)
        Nk = R.sum(0)
        m_ref = np.einsum("nk,nkq->kq", R, Ez) / Nk[:, None]
        d = Ez - m_ref[None]
        S_ref = (np.einsum("nk,nkq,nkr->kqr", R, d, d) + Nk[:, None, None] * np.asarray(comp.Vz)) / Nk[:, None, None]
        np.testing.assert_allclose(np.asarray(m), m_ref, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(S), S_ref, rtol=1e-6, atol=1e-6)


def test_empty_component_takes_its_prior():
    from transst_bayes import priors as P

    X, W, psi, mu, Sigma, R = _problem(3)
    R = R.copy()
    R[:, 0] = 0.0
    R /= R.sum(1, keepdims=True)
    comp = F.components(F.precompute(jnp.asarray(X, jnp.float32), jnp.asarray(W, jnp.float32),
                                     jnp.asarray(psi, jnp.float32)),
                        jnp.asarray(mu, jnp.float32), jnp.asarray(Sigma, jnp.float32), X.shape[1])
    prior = P.free_prior(mu.shape[0], mu.shape[1])
    m, S = P.domain_map(F.domain_stats(jnp.asarray(R, jnp.float32), comp), prior, 1.0,
                        jnp.asarray(Sigma, jnp.float32))
    assert np.all(np.isfinite(np.asarray(m))) and np.all(np.isfinite(np.asarray(S)))
    np.testing.assert_allclose(np.asarray(m[0]), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(S[0]), P.FREE_COV * np.eye(mu.shape[1]), atol=1e-5)


def _marginal_loglik_grid(B, W0, psi, G, grid):
    """sum_g log N(b_g | W0_g, tau^2 I + psi_g G^-1) for each tau^2 in grid: the least-squares
    loadings b_g = G^-1 XtEz_g, with dense covariances (no eigenbasis)."""
    Ginv = np.linalg.inv(G)
    q = G.shape[0]
    d = B - W0
    out = []
    for t in grid:
        C = t * np.eye(q)[None] + psi[:, None, None] * Ginv[None]  # (p, q, q)
        _, logdet = np.linalg.slogdet(C)
        maha = np.einsum("gi,gi->g", d, np.linalg.solve(C, d[..., None])[..., 0])
        out.append(-0.5 * np.sum(logdet + maha + q * np.log(2 * np.pi)))
    return np.array(out)


@pytest.mark.parametrize("tau_true", [0.05, 0.4, 1.5])
def test_eb_tau2_maximises_the_marginal_likelihood_on_a_grid(tau_true):
    """eb_tau2 (bisection on the slope, in the eigenbasis of G) against a dense brute-force
    evaluation of the marginal likelihood of the least-squares loadings on a fine log grid."""
    rng = np.random.default_rng(int(tau_true * 100))
    p, q, n = 60, 3, 200
    A = rng.normal(size=(q, q))
    G = n * (A @ A.T / q + np.eye(q))
    psi = rng.uniform(0.5, 2.0, size=p)
    W0 = rng.normal(size=(p, q))
    W = W0 + tau_true * rng.normal(size=(p, q))
    # least-squares loadings with error covariance psi_g G^-1
    L = np.linalg.cholesky(np.linalg.inv(G))
    B = W + np.sqrt(psi)[:, None] * (rng.normal(size=(p, q)) @ L.T)
    st = F.LoadingStats(XtEz=jnp.asarray(B @ G), G=jnp.asarray(G), xx=jnp.zeros(p), n=jnp.asarray(float(n)))
    with jax.enable_x64(True):
        got = float(P.eb_tau2(st, jnp.asarray(W0), jnp.asarray(psi)))
    grid = np.exp(np.linspace(np.log(1e-4), np.log(10.0), 400))
    ll = _marginal_loglik_grid(B, W0, psi, G, grid)
    best = grid[np.argmax(ll)]
    step = grid[1] / grid[0]
    assert best / step <= got <= best * step, (got, best)
    # and the estimate is near the truth (p q = 180 loadings)
    assert 0.5 * tau_true**2 <= got <= 2.0 * tau_true**2 + 0.01

