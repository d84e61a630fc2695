"""Speed benchmark: compile time and run time separately, and peak memory, on simulated data.

Sizes n = 1k, 10k, 100k target spots (square lattices), p = 2,000 genes, q = 15, K = 7, a source
of 3,000 spots; plus the HER2ST-sized case (500 target spots, 3,000 source spots, 2,000 genes).
Each size runs in its own process so that peak memory (max RSS) is its own. The stage columns
are the warm fit's `res.info["timings"]` (prepare: normalise, select, standardise; graph:
neighbours, padding, colouring; source, transfer, cluster: the three EM steps, all K and
restarts); compile = first fit minus the warm one.

    python benchmarks/speed.py [--sizes 1000 10000 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import markdown_table, write_json

CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, {bench!r})
from _common import peak_rss_gb
import numpy as np
import transst_bayes as tb
warnings.simplefilter("ignore")
n = {n}
h = int(round(np.sqrt(n))); w = int(np.ceil(n / h))
t0 = time.perf_counter()
src, tgt = tb.simulate(0, height=h, width=w, n_genes=2000, n_factors=15, n_domains=7,
                       source_height=50, source_width=60, error=2.0)
t_sim = time.perf_counter() - t0
mem_data = peak_rss_gb()
kw = dict(n_domains=7, n_factors=15, seed=0)
t0 = time.perf_counter(); r = tb.fit_em(tgt, src, **kw); first = time.perf_counter() - t0
cold = r.info["timings"]
t0 = time.perf_counter(); r = tb.fit_em(tgt, src, **kw); second = time.perf_counter() - t0
warm = r.info["timings"]
ari = tb.adjusted_rand_index(r.labels, tgt.obs["truth"].to_numpy())
stages = {{f"{{k}} s": warm[k] for k in ("prepare", "graph", "source", "transfer", "cluster")}}
print(json.dumps(dict(n=tgt.n_obs, first=first, run=second, compile=max(first - second, 0.0),
                      ari=ari, peak_gb=peak_rss_gb(), data_gb=mem_data, simulate_s=t_sim,
                      n_iter=r.k_table[0]["n_iter"], cold_timings=cold, **stages)))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="*", type=int, default=[500, 1000, 10000, 100000])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    bench = str(Path(__file__).resolve().parent)
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD.format(n=n, bench=bench)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(row, flush=True)
    stages = ["prepare s", "graph s", "source s", "transfer s", "cluster s"]
    cols = ["n", "compile", "run"] + stages + ["n_iter", "ari", "peak_gb", "data_gb"]
    print()
    print(markdown_table(rows, cols, {"compile": "{:.1f} s", "run": "{:.2f} s", "ari": "{:.3f}",
                                      "peak_gb": "{:.2f}", "data_gb": "{:.2f}",
                                      **{c: "{:.2f}" for c in stages}}))
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
