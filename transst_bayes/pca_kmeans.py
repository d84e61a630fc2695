"""Small dense helpers: randomised PCA and k-means++ (JAX, jit-able)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def pca(X, q: int, key, n_oversample: int = 10, n_power: int = 4, n=None):
    """Randomised truncated SVD of X (not centred: the genes are standardised upstream), as
    (Z, W) with X ≈ Z W^T: Z = sqrt(n) U (unit mean square per column), W = V S / sqrt(n); n the
    number of spots (default the rows; fewer where zero rows pad X)."""
    rows, p = X.shape
    n = rows if n is None else n
    k = min(q + n_oversample, min(rows, p))
    Q = jax.random.normal(key, (p, k), X.dtype)
    Y = X @ Q
    for _ in range(n_power):
        Y, _ = jnp.linalg.qr(Y)
        Y = X @ (X.T @ Y)
    Qy, _ = jnp.linalg.qr(Y)
    B = Qy.T @ X  # (k, p)
    Ub, s, Vt = jnp.linalg.svd(B, full_matrices=False)
    U = Qy @ Ub[:, :q]
    sq = jnp.sqrt(jnp.asarray(n, X.dtype))
    Z = U * sq
    W = Vt[:q].T * (s[:q] / sq)
    return Z, W


def kmeans(key, Z, K: int, n_iter: int = 30):
    """k-means++ seeding then Lloyd iterations; empty clusters keep their centre."""
    n = Z.shape[0]
    k0, key = jax.random.split(key)
    first = jax.random.randint(k0, (), 0, n)
    centres = jnp.zeros((K, Z.shape[1]), Z.dtype).at[0].set(Z[first])
    d2 = jnp.sum((Z - Z[first]) ** 2, axis=1)

    def seed(i, c):
        centres, d2, key = c
        key, sub = jax.random.split(key)
        j = jax.random.categorical(sub, jnp.log(d2 + 1e-12))
        centres = centres.at[i].set(Z[j])
        d2 = jnp.minimum(d2, jnp.sum((Z - Z[j]) ** 2, axis=1))
        return centres, d2, key

    centres, _, _ = lax.fori_loop(1, K, seed, (centres, d2, key))

    def assign(c):
        d = jnp.sum(Z**2, 1)[:, None] - 2 * Z @ c.T + jnp.sum(c**2, 1)[None]
        return jnp.argmin(d, axis=1)

    def lloyd(i, c):
        lab = assign(c)
        oh = jax.nn.one_hot(lab, K, dtype=Z.dtype)
        cnt = oh.sum(0)
        new = (oh.T @ Z) / jnp.maximum(cnt, 1.0)[:, None]
        return jnp.where((cnt > 0)[:, None], new, c)

    centres = lax.fori_loop(0, n_iter, lloyd, centres)
    return assign(centres)
