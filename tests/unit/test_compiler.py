"""compiler.py: XLA's quicker CPU compilation, set only where it is safe to set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from transst_bayes import compiler

CHILD = textwrap.dedent("""
    import json, os
    from transst_bayes import compiler
    first = compiler.quick_cpu_compilation()
    flags = os.environ.get("XLA_FLAGS", "")
    import jax, jax.numpy as jnp
    value = float(jax.jit(lambda x: jnp.exp(x).sum())(jnp.arange(3.0)))  # XLA read the flags
    again = compiler.quick_cpu_compilation()  # the backend has started: nothing to do
    print(json.dumps(dict(first=first, flags=flags, value=value, again=again)))
""")


def _child(xla_flags: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_flag_this_xla_does_not_know_is_never_set():
    assert not compiler.xla_knows("xla_cpu_no_such_flag_0123")


def test_a_new_process_gets_the_flag_and_compiles():
    out = _child(None)
    expected = 1.0 + 2.718281828459045 + 7.38905609893065
    assert abs(out["value"] - expected) < 1e-5
    assert out["again"] is False
    if compiler.xla_knows(compiler.FLAG):
        assert out["first"] is True and out["flags"] == f"--{compiler.FLAG}=false"
    else:  # a jaxlib without the flag: XLA_FLAGS untouched (XLA would stop the process)
        assert out["first"] is False and out["flags"] == ""


def test_a_flag_the_caller_set_is_left_as_it_is():
    out = _child(f"--xla_backend_optimization_level=0 --{compiler.FLAG}=true")
    assert out["first"] is False
    assert out["flags"] == f"--xla_backend_optimization_level=0 --{compiler.FLAG}=true"
