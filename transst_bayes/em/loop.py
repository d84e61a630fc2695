"""The compiled EM loop: `lax.while_loop` over a pure step with a per-iteration record.

A step is `state, info = step(state)`: `info` is the objective of the state entering the step
(a scalar), or a NamedTuple whose field `objective` is it, with whatever else the step wants
recorded (the cluster step: beta, tau^2, kappa^2). Every field of `info` is kept per iteration.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class LoopResult(NamedTuple):
    state: object
    trace: object  # info's structure, each leaf (max_iter, ...) per iteration, NaN after the last
    n_iter: jax.Array
    converged: jax.Array


def objective(info):
    """The objective in a step's `info` (the scalar itself, or its field `objective`)."""
    return info.objective if hasattr(info, "objective") else info


def run_em(step: Callable, state0, max_iter: int, tol: float, scale, limit=None) -> LoopResult:
    """Iterate `state, info = step(state)` until the objective changes by less than
    `tol * scale` (scale = number of spots: tol is in nats per spot) or `max_iter` iterations ran
    (or `limit`, a traced bound <= max_iter: one compiled loop serves several iteration budgets)."""
    bound = max_iter if limit is None else jnp.minimum(limit, max_iter)
    shapes = jax.eval_shape(step, state0)[1]
    trace0 = jax.tree_util.tree_map(lambda a: jnp.full((max_iter,) + a.shape, jnp.nan, a.dtype), shapes)

    def cond(c):
        it, _, _, _, done = c
        return jnp.logical_and(it < bound, jnp.logical_not(done))

    def body(c):
        it, state, prev, trace, _ = c
        state, info = step(state)
        trace = jax.tree_util.tree_map(lambda t, v: t.at[it].set(v), trace, info)
        obj = objective(info)
        done = jnp.abs(obj - prev) <= tol * scale
        return it + 1, state, obj, trace, done

    init = (jnp.asarray(0), state0, jnp.asarray(-jnp.inf, objective(shapes).dtype), trace0,
            jnp.asarray(False))
    it, state, _, trace, done = lax.while_loop(cond, body, init)
    return LoopResult(state=state, trace=trace, n_iter=it, converged=done)
