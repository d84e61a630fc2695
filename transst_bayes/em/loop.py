"""A compiled EM driver: `lax.while_loop` over a pure step function with an objective trace."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class LoopResult(NamedTuple):
    state: object
    trace: jax.Array  # (max_iter,) objective per iteration, NaN after the last one
    n_iter: jax.Array
    converged: jax.Array


def run_em(step: Callable, state0, max_iter: int, tol: float, scale, dtype=jnp.float32,
           limit=None) -> LoopResult:
    """Iterate `state, objective = step(state)` until the objective changes by less than
    `tol * scale` (scale = number of spots: tol is in nats per spot) or `max_iter` iterations ran
    (or `limit`, a traced bound <= max_iter: one compiled loop serves several iteration budgets).
    The objective is the one of the state entering the step (computed in its E-step)."""
    bound = max_iter if limit is None else jnp.minimum(limit, max_iter)

    def cond(c):
        it, _, _, _, done = c
        return jnp.logical_and(it < bound, jnp.logical_not(done))

    def body(c):
        it, state, prev, trace, _ = c
        state, obj = step(state)
        trace = trace.at[it].set(obj)
        done = jnp.abs(obj - prev) <= tol * scale
        return it + 1, state, obj, trace, done

    init = (jnp.asarray(0), state0, jnp.asarray(-jnp.inf, dtype),
            jnp.full((max_iter,), jnp.nan, dtype), jnp.asarray(False))
    it, state, _, trace, done = lax.while_loop(cond, body, init)
    return LoopResult(state=state, trace=trace, n_iter=it, converged=done)
