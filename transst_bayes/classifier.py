"""The source classifier's term of anchored fits: a Bayesian multinomial regression of the
source's classes on its factor scores, whose log-probabilities join each anchored domain's data
term beside its Gaussian (the hybrid data term; `em.cluster.data_term`).

    c_i | v_i ~ Categorical(softmax(b + v_i A)),   A[q, C] ~ N(0, s^2),   b[C] ~ N(0, B_SCALE^2)

`log_joint` is its log-density and `fit_map` its MAP by Newton's method (the problem is small and
concave: (q + 1) C parameters); both paths use that MAP (SVI keeps it fixed, as it keeps the
loadings). The term of domain k at spot j is `weight * log p(c(k) | v_j)` for a domain anchored
to class c(k) and `weight * log(1 / C)` for a novel domain (`domain_term`). It is used only in
fits without novel domains and where `agreement_weight` >= AGREEMENT_MIN: the classifier knows
the source's classes alone and counts against a domain that none of them describes (a simulated
target whose two classes the source merged: ARI 0.64 with the term, 0.92 without).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# the least agreement (`agreement_weight`) at which a fit uses the classifier's term: simulated
# targets whose classes carry over give 0.98-1.04, shifted classes 0.36-0.69; the DLPFC pair 0.91-0.98
AGREEMENT_MIN = 0.8
LOG_EXCLUDED = -20.0  # the classifier's term of a class the target's own fit did not find
COEF_SCALE = 1.0  # prior sd of the regression coefficients on whitened factor scores
B_SCALE = 5.0  # prior sd of the intercepts


class ClassRegression(NamedTuple):
    A: jax.Array  # (q, C) coefficients
    b: jax.Array  # (C,) intercepts


def log_probs(reg: ClassRegression, V) -> jax.Array:
    """(n, C) log p(c | v) for the rows of V (n, q)."""
    return jax.nn.log_softmax(V @ reg.A + reg.b, axis=1)


def log_joint(reg: ClassRegression, V, labels, coef_scale: float = COEF_SCALE) -> jax.Array:
    """log p(labels | V, A, b) + log p(A) + log p(b) (the Gaussian priors' constants left out)."""
    C = reg.b.shape[0]
    ll = jnp.sum(log_probs(reg, V) * jax.nn.one_hot(labels, C, dtype=V.dtype))
    return ll - 0.5 * jnp.sum(reg.A**2) / coef_scale**2 - 0.5 * jnp.sum(reg.b**2) / B_SCALE**2


def fit_map(V, labels, C: int, coef_scale: float = COEF_SCALE, n_steps: int = 30) -> ClassRegression:
    """The MAP of the regression by damped Newton steps on the flattened parameters (jit with
    C and n_steps static)."""
    q = V.shape[1]
    dt = V.dtype

    def unflat(t):
        return ClassRegression(t[: q * C].reshape(q, C), t[q * C:])

    def f(t):
        return -log_joint(unflat(t), V, labels, coef_scale)

    grad, hess = jax.grad(f), jax.hessian(f)

    def newton(t, _):
        g, H = grad(t), hess(t)
        step = jnp.linalg.solve(H + 1e-6 * jnp.eye(t.shape[0], dtype=dt), g)
        # halve the step until the objective does not rise (at most 10 halvings)
        def body(c):
            a, _ = c
            return a * 0.5, f(t - a * 0.5 * step)
        a, _ = jax.lax.while_loop(lambda c: (c[1] > f(t)) & (c[0] > 1e-3), body, (jnp.asarray(1.0, dt), f(t - step)))
        return t - a * step, None

    t, _ = jax.lax.scan(newton, jnp.zeros(q * C + C, dt), None, length=n_steps)
    return unflat(t)


def domain_term(logp, classes, K: int, weight) -> jax.Array:
    """(n, K) the classifier's term of each domain's data term: weight * log p(c(k) | v_j) for
    the anchored domains k < len(classes) (classes[k] = c(k)), weight * log(1 / C) for novel
    ones (the source's average class). The fitting code sets LOG_EXCLUDED for the classes the
    target's own fit did not find."""
    n, C = logp.shape
    A = len(classes)
    field = jnp.full((n, K), -jnp.log(C), logp.dtype)
    if A:
        field = field.at[:, :A].set(logp[:, jnp.asarray(classes)])
    return weight * field


def agreement_weight(R, logp_domains, w=None, n_steps=20, upper: float = 4.0) -> jax.Array:
    """The temperature gamma in [0, upper] that makes softmax(gamma * logp_domains) best predict
    the responsibilities R (n, K) of a fit without the classifier: argmax of
    sum_j w_j sum_k R_jk log softmax_k(gamma * logp_jk), concave in gamma (Newton steps). About 1
    where the source's classifier agrees with the target's own domains, near 0 where its classes
    do not carry over to the target."""
    wt = jnp.ones(R.shape[0], R.dtype) if w is None else w

    def f(g):
        return jnp.sum(wt * jnp.sum(R * jax.nn.log_softmax(g * logp_domains, axis=1), axis=1))

    d1, d2 = jax.grad(f), jax.grad(jax.grad(f))

    def body(i, g):
        a, b = d1(g), d2(g)
        step = jnp.where(b < -1e-8, -a / b, jnp.sign(a) * 0.5)
        return jnp.clip(g + jnp.clip(step, -1.0, 1.0), 0.0, upper)

    return jax.lax.fori_loop(0, n_steps, body, jnp.asarray(1.0, R.dtype))
