"""Speed benchmark: compile time and run time separately, and peak memory, on simulated data.

Sizes n target spots (square lattices; default 500, 10k, 100k; 300k and 1M on request), p =
2,000 genes, q = 15, K = 7, a source of 3,000 spots. Each size runs in its own process so that
peak memory (max RSS) is its own. The stage columns are the warm fit's `res.info["timings"]`
(prepare: normalise, select, standardise; graph: neighbours, padding, colouring; source,
transfer, cluster: the three EM steps, all K and restarts); compile = first fit minus the warm
one; dev_gb = the accelerator's peak memory (`device.memory_stats()`, GPU only).

    python benchmarks/speed.py [--sizes 500 10000 100000 300000 1000000] [--devices N]
                               [--counts] [--svi BATCH] [--genes P ...] [--factors Q ...]
                               [--domains K ...] [--json out.json]

--devices N: split the spots over N devices (`fit_em(devices=...)`); on a CPU-only machine the
child process is started with N host devices (XLA_FLAGS=--xla_force_host_platform_device_count).
--counts: the target arrives as an AnnData of sparse counts (CSR, negative binomial around the
simulated expression, library size ~500: 20% non-zero at 2,000 genes), written to an .h5ad by one process and fitted
by another, so that peak = the fit's own peak RSS (reading the file included); one fit only (no
warm second fit: compile is not separated).
--svi BATCH: `fit_svi` with minibatches of BATCH spots instead (one fit: the EM warm start, SVI,
20 posterior draws; n_iter = SVI rounds); with --counts, on the sparse counts read from the .h5ad.
--genes / --factors / --domains: one row per combination (the cost slopes of README).
--default-call: the call a user makes on real data instead, `fit_em(target, source, label_key,
n_domains=K)` with every default (the transfer choice and the calibration's held-out fits
included), on HER2ST H1 (source: the other seven sections) and DLPFC 151676 (source: 151675):
a new process with an empty compilation cache (first call, then a second call in the same
process), and a second new process that finds the first one's cache on disk.

    python benchmarks/speed.py --default-call
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import markdown_table, publish, table_spec, write_json

from transst_bayes import compiler

HEAD = r"""
import json, sys, time, warnings
sys.path.insert(0, {bench!r})
from _common import peak_rss_gb
import numpy as np
import jax
import transst_bayes as tb
warnings.simplefilter("ignore")
n = {n}
h = int(round(np.sqrt(n))); w = int(np.ceil(n / h))

def simulate():
    return tb.simulate(0, height=h, width=w, n_genes={p}, n_factors={q}, n_domains={K},
                       source_height=50, source_width=60, error=2.0)

def device_gb():
    stats = jax.devices()[0].memory_stats() or {{}}
    return stats.get("peak_bytes_in_use", float("nan")) / 1024**3

devices = None if {n_devices} == 1 else list(range({n_devices}))
kw = dict(n_domains={K}, n_factors={q}, seed=0, devices=devices)
"""

FIT = HEAD + r"""
t0 = time.perf_counter()
src, tgt = simulate()
t_sim = time.perf_counter() - t0
mem_data = peak_rss_gb()
t0 = time.perf_counter(); r = tb.fit_em(tgt, src, **kw); first = time.perf_counter() - t0
cold = r.info["timings"]
t0 = time.perf_counter(); r = tb.fit_em(tgt, src, **kw); second = time.perf_counter() - t0
warm = r.info["timings"]
ari = tb.adjusted_rand_index(r.labels, tgt.obs["truth"].to_numpy())
stages = {{f"{{k}} s": warm[k] for k in ("prepare", "graph", "source", "transfer", "cluster")}}
print(json.dumps(dict(n=tgt.n_obs, p={p}, q={q}, K={K}, devices=r.info["n_devices"], first=first, run=second,
                      compile=max(first - second, 0.0), ari=ari, peak_gb=peak_rss_gb(), data_gb=mem_data,
                      dev_gb=device_gb(), simulate_s=t_sim, n_iter=r.k_table[0]["n_iter"],
                      converged=r.k_table[0]["converged"], cold_timings=cold, **stages)))
"""

MAKE_COUNTS = HEAD + r"""
import scipy.sparse as sp
src, tgt = simulate()
rng = np.random.default_rng(1)

def to_counts(x):
    e = np.exp(0.5 * (x - x.max(axis=1, keepdims=True)))
    m = 500.0 * rng.lognormal(0.0, 0.3, size=(x.shape[0], 1)) * e / e.sum(axis=1, keepdims=True)
    return sp.csr_matrix(rng.poisson(rng.gamma(2.0, m / 2.0)).astype(np.float32))

counts = sp.vstack([to_counts(np.asarray(tgt.X[i:i + 20000])) for i in range(0, tgt.n_obs, 20000)], format="csr")
tgt.X = counts
src.X = to_counts(np.asarray(src.X))
tgt.write_h5ad({path!r} + "_t.h5ad")
src.write_h5ad({path!r} + "_s.h5ad")
print(json.dumps(dict(nnz_share=counts.nnz / (counts.shape[0] * counts.shape[1]), csr_gb=(counts.data.nbytes
                      + counts.indices.nbytes + counts.indptr.nbytes) / 1024**3)))
"""

SVI = HEAD + r"""
{load}
mem_data = peak_rss_gb()
t0 = time.perf_counter()
r = tb.fit_svi(tgt, src, batch_size={batch}, num_samples=20, **kw)
first = time.perf_counter() - t0
t = r.info["timings"]
ari = tb.adjusted_rand_index(r.labels, tgt.obs["truth"].to_numpy())
stages = {{f"{{k}} s": t[k] for k in ("prepare", "graph", "source", "transfer", "cluster", "svi")}}
print(json.dumps(dict(n=tgt.n_obs, p={p}, q={q}, K={K}, devices=r.info["n_devices"], first=first, run=first,
                      compile=float("nan"), ari=ari, peak_gb=peak_rss_gb(), data_gb=mem_data, dev_gb=device_gb(),
                      n_iter=r.info["svi_rounds"], converged=r.info["svi_converged"], **stages)))
"""

READ_COUNTS = "import anndata as ad; tgt = ad.read_h5ad({path!r} + '_t.h5ad'); src = ad.read_h5ad({path!r} + '_s.h5ad')"

FIT_COUNTS = HEAD + r"""
import anndata as ad
t0 = time.perf_counter()
tgt = ad.read_h5ad({path!r} + "_t.h5ad"); src = ad.read_h5ad({path!r} + "_s.h5ad")
t_read = time.perf_counter() - t0
mem_data = peak_rss_gb()
t0 = time.perf_counter(); r = tb.fit_em(tgt, src, **kw); first = time.perf_counter() - t0
ari = tb.adjusted_rand_index(r.labels, tgt.obs["truth"].to_numpy())
t = r.info["timings"]
stages = {{f"{{k}} s": t[k] for k in ("prepare", "graph", "source", "transfer", "cluster")}}
print(json.dumps(dict(n=tgt.n_obs, p={p}, q={q}, K={K}, devices=r.info["n_devices"], first=first, run=first,
                      compile=float("nan"),
                      ari=ari, peak_gb=peak_rss_gb(), data_gb=mem_data, dev_gb=device_gb(), simulate_s=t_read,
                      n_iter=r.k_table[0]["n_iter"], converged=r.k_table[0]["converged"], **stages)))
"""


DEFAULT_CALL = r"""
import json, sys, time, warnings
sys.path.insert(0, {bench!r})
import jax.monitoring as m
n = {{"requests": 0, "hits": 0}}
def count(event, **kw):
    if event == "/jax/compilation_cache/compile_requests_use_cache": n["requests"] += 1
    if event == "/jax/compilation_cache/cache_hits": n["hits"] += 1
m.register_event_listener(count)
from _common import peak_rss_gb
from real_data import transfer_protocol
import numpy as np
import transst_bayes as tb
warnings.simplefilter("ignore")
t0 = time.perf_counter()
target, source, K, label_key, opts = transfer_protocol({data!r}, {section!r})
t_read = time.perf_counter() - t0
truth = target.obs[label_key].to_numpy()
scored = ~target.obs[label_key].isna().to_numpy()
t0 = time.perf_counter()
r = tb.fit_em(target, source, label_key=label_key, n_domains=K, **opts)
first = time.perf_counter() - t0
compiled, hits = n["requests"] - n["hits"], n["hits"]
t0 = time.perf_counter()
r2 = tb.fit_em(target, source, label_key=label_key, n_domains=K, **opts)
second = time.perf_counter() - t0
print(json.dumps(dict(first=first, second=second, compiled=compiled, cache_hits=hits, read_s=t_read,
                      ari=tb.adjusted_rand_index(r.labels[scored], truth[scored]),
                      same_labels_second=bool(np.array_equal(r.labels, r2.labels)),
                      mode=r.settings["transfer_used"], labels=r.labels.tolist(), peak_gb=peak_rss_gb(),
                      timings={{k: round(v, 2) for k, v in r.info["timings"].items()}})))
"""

DEFAULT_PROTOCOL = (
    "The default call, `fit_em(target, source, label_key, n_domains=K)` with every other argument "
    "at its default (transfer choice and calibration included; their held-out fits are part of the "
    "call), 2 CPU cores. HER2ST H1: the other seven sections as source, K = 6; DLPFC 151676: "
    "151675 as source, K = 7. `new process, empty cache`: a new Python process whose compilation "
    "cache folder is empty (first call; `second` = the same call again in that process, which "
    "reuses the first call's held-out fits: `transst_bayes/heldout.py`); `new "
    "process, cache on disk`: another new process that finds the first one's cache. compiled = "
    "programs compiled during the first call (cache requests that were not hits). The first two "
    "compile with XLA's older CPU code emitters, the default (`transst_bayes/compiler.py`); `..., "
    "TRANSST_QUICK_COMPILE=off`: an empty cache with XLA's default emitters. The published R "
    "code of the TransST paper takes about 26 s for a HER2ST section and about 48 s for a Visium "
    "cortex section (with a three-section source), on the hardware of its authors.")


def default_call(bench: str, env: dict) -> list[dict]:
    rows = []
    for data, section in (("her2st", "H1"), ("dlpfc", "151676")):
        with tempfile.TemporaryDirectory() as tmp:
            env_c = dict(env, TRANSST_CACHE_DIR=str(Path(tmp) / "jax"))
            code = DEFAULT_CALL.format(bench=bench, data=data, section=section)
            cold = _child(code, env_c)
            warm = cold and _child(code, env_c)
        with tempfile.TemporaryDirectory() as tmp:  # without the quicker CPU compilation (compiler.py)
            env_x = dict(env, TRANSST_CACHE_DIR=str(Path(tmp) / "jax"), **{compiler.ENV: "off"})
            xla_default = warm and compiler.xla_knows(compiler.FLAG) and _child(code, env_x)
        if not warm:
            continue
        runs = [("new process, empty cache", cold), ("new process, cache on disk", warm)]
        runs += [(f"new process, empty cache, {compiler.ENV}=off", xla_default)] if xla_default else []
        for name, r in runs:
            rows.append(dict(data=data, target=section, process=name, first=r["first"], second=r["second"],
                             compiled=r["compiled"], cache_hits=r["cache_hits"], ari=r["ari"], mode=r["mode"],
                             same_labels=r["labels"] == cold["labels"] and r["same_labels_second"],
                             peak_gb=r["peak_gb"], timings=r["timings"]))
            print({k: v for k, v in rows[-1].items() if k != "timings"}, flush=True)
    return rows


def _child(code: str, env: dict) -> dict | None:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:  # a negative code is a signal: -9 is the out-of-memory killer's
        print(f"child process failed with return code {out.returncode}:\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


PROTOCOL = (
    "Simulated targets (square lattices), source 3,000 spots; each size in its own process. "
    "compile = first fit minus second fit; run = second fit (data preparation, source, transfer, "
    "3 restarts); the stage columns are that fit's `res.info[\"timings\"]` (prepare: read, check, "
    "normalise, select, standardise; graph: neighbours and colouring; source, transfer, cluster: "
    "the three EM steps); peak = maximum RSS of the process (simulation included), data = RSS "
    "after simulating, dev = the accelerator's peak memory; n_iter counts the iterations of the "
    "continued best restart. With --counts (or --svi) one call with its compilation: compile is "
    "not separated. The on-disk compilation cache is off in these processes.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", type=int, default=[500, 10000, 100000])
    ap.add_argument("--devices", type=int, default=1, help="split the spots over this many devices")
    ap.add_argument("--counts", action="store_true", help="target as sparse counts read from an .h5ad")
    ap.add_argument("--genes", nargs="*", type=int, default=[2000], help="p (several: one row each)")
    ap.add_argument("--factors", nargs="*", type=int, default=[15], help="q (several: one row each)")
    ap.add_argument("--domains", nargs="*", type=int, default=[7], help="K (several: one row each)")
    ap.add_argument("--svi", type=int, default=None, metavar="BATCH",
                    help="time fit_svi with minibatches of BATCH spots (one fit, 20 posterior draws)")
    ap.add_argument("--default-call", action="store_true",
                    help="time the default fit_em call on HER2ST H1 and DLPFC 151676 in new processes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.devices < 1:
        ap.error("--devices must be at least 1")
    bench = str(Path(__file__).resolve().parent)
    # the size tables time compilation itself: no programs read from the on-disk cache
    # (--default-call sets its own cache folders)
    env = dict(os.environ, TRANSST_CACHE_DIR="off")
    if args.devices > 1 and env.get("JAX_PLATFORMS", "") in ("", "cpu"):
        import jax

        if jax.default_backend() == "cpu":
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                f" --xla_force_host_platform_device_count={args.devices}").strip()
    if args.default_call:
        rows = default_call(bench, env)
        cols = ["data", "target", "process", "first", "second", "compiled", "cache_hits", "ari", "mode",
                "same_labels", "peak_gb"]
        fmt = {"first": "{:.1f} s", "second": "{:.1f} s", "ari": "{:.3f}", "peak_gb": "{:.2f}"}
        print(markdown_table(rows, cols, fmt))
        write_json(args.json, rows)
        if rows:
            publish("Speed of the default call", DEFAULT_PROTOCOL, [table_spec(rows, cols, fmt)])
        return
    rows = []
    grid = [(n, p, q, K) for n in args.sizes for p in args.genes for q in args.factors for K in args.domains]
    for n, p, q, K in grid:
        fmt = dict(n=n, p=p, q=q, K=K, bench=bench, n_devices=args.devices)
        if args.svi is not None and args.counts:
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / "speed")
                made = _child(MAKE_COUNTS.format(path=path, **fmt), env)
                row = made and _child(SVI.format(batch=args.svi, load=READ_COUNTS.format(path=path), **fmt), env)
                if row:
                    row.update(made)
        elif args.svi is not None:
            row = _child(SVI.format(batch=args.svi, load="src, tgt = simulate()", **fmt), env)
        elif args.counts:
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / "speed")
                made = _child(MAKE_COUNTS.format(path=path, **fmt), env)
                row = made and _child(FIT_COUNTS.format(path=path, **fmt), env)
                if row:
                    row.update(made)
        else:
            row = _child(FIT.format(**fmt), env)
        if row is None:
            continue
        rows.append(row)
        print(row, flush=True)
    stages = ["prepare s", "graph s", "source s", "transfer s", "cluster s"]
    if args.svi is not None:
        stages.append("svi s")
    cols = (["n", "p", "q", "K", "devices", "compile", "run"] + stages
            + ["n_iter", "converged", "ari", "peak_gb", "data_gb", "dev_gb"])
    fmt = {"compile": "{:.1f} s", "run": "{:.2f} s", "ari": "{:.3f}", "peak_gb": "{:.2f}",
           "data_gb": "{:.2f}", "dev_gb": "{:.2f}", **{c: "{:.2f}" for c in stages}}
    print()
    print(markdown_table(rows, cols, fmt))
    write_json(args.json, rows)
    if rows:
        publish("Speed and memory" + (" (sparse counts from an .h5ad)" if args.counts else "")
                + (f" (fit_svi, minibatches of {args.svi})" if args.svi is not None else ""),
                PROTOCOL, [table_spec(rows, [c for c in cols if any(c in r for r in rows)], fmt)])


if __name__ == "__main__":
    main()
