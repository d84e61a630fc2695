"""compiler.py: XLA's quicker CPU compilation, on by default at the first fit, set only where it
is safe to set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

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


FIRST_FIT = textwrap.dedent("""
    import json, os, sys
    import transst_bayes as tb
    before = os.environ.get("XLA_FLAGS", "")
    if sys.argv[1] == "jax-first":  # the caller's own JAX work started the backend
        import jax.numpy as jnp
        jnp.ones(2).block_until_ready()
    src, tgt = tb.simulate(0, height=6, width=6, n_genes=20, n_factors=2, n_domains=2)
    res = tb.fit_em(tgt, src, n_domains=2, n_factors=2, transfer="eb", calibrate="none", max_iter=3)
    print(json.dumps(dict(before=before, after=os.environ.get("XLA_FLAGS", ""))))
""")


def _first_fit(how: str, **env_extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", compiler.ENV)}
    env.update(env_extra)
    run = subprocess.run([sys.executable, "-c", FIRST_FIT, how], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # three new processes, each compiling a small fit
def test_the_first_fit_turns_it_on_unless_told_otherwise_or_too_late():
    if not compiler.xla_knows(compiler.FLAG):
        pytest.skip(f"this jaxlib has no {compiler.FLAG}: nothing to turn on")
    flag = f"--{compiler.FLAG}=false"
    on = _first_fit("fit-first")
    assert on == {"before": "", "after": flag}  # importing changed nothing; the first fit did
    assert _first_fit("fit-first", **{compiler.ENV: "off"})["after"] == ""
    assert _first_fit("jax-first")["after"] == ""  # JAX had started: the flag would change nothing


def test_an_unreadable_setting_is_named(monkeypatch):
    monkeypatch.setattr(compiler, "_decided", {})
    monkeypatch.setenv(compiler.ENV, "banana")
    with pytest.raises(ValueError, match=compiler.ENV):
        compiler.ensure_default()
    assert compiler._decided == {}  # nothing decided: a corrected value is read at the next fit
