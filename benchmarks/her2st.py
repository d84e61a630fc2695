"""HER2ST leave-one-section-out benchmark (protocol in ../shared/data/README.md).

For each of the 8 sections: target = that section, source = the other seven with pathologist
labels; K = number of labels left in the target; 2,000 genes by variance on the target; q = 15.
Prints ARI per section and the mean for TransST (EM, default settings: anchored domains, the
two-stage variant), its ablations (joint: loadings re-fitted with the domains; no transfer; the
paper's settings) and the
baselines (PCA + k-means, PCA + GMM) computed on the same preprocessed matrix, plus wall time.

With ``--svi`` a column "TransST (SVI)" is added: ``fit_svi`` with ``guide="normal"``
(AutoNormal), the global transfer prior and fit_svi's default settings (200 steps per round, at
most 30 rounds, rtol = 1e-4, lr = 0.01, 100 posterior draws, full batch); its seconds include the
EM warm start it runs itself and NumPyro's set-up and compilation (redone on every call). The
first section is fitted twice by SVI: "SVI s" is the first fit of the process, "SVI again s" the
second identical fit. ``--svi-only`` runs TransST (EM) and TransST (SVI) only (no ablations,
no baselines). ``--svi-fresh`` fits each section by SVI in its own new Python process (what one
`python script.py` on one section costs: every JAX compilation included; the seconds of the
fit_svi call, and the imports beside them).

    python benchmarks/her2st.py [--sections A1 B1] [--svi | --svi-only | --svi-fresh] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import markdown_table, pca_gmm, pca_kmeans, release_compiled_programs, write_json
from real_data import her2st_protocol, her2st_sections

import transst_bayes as tb
from transst_bayes.data import DataSettings, prepare

METHODS = {
    "TransST (EM)": dict(),
    "joint": dict(variant="joint"),
    "no transfer": dict(transfer="none"),
    "paper-style (cv, two-stage, k=5)": dict(transfer="cv", variant="two_stage", n_neighbors=5),
}


SVI = "TransST (SVI)"


def run(sections, q=15, seed=0, methods=METHODS, svi=False, baselines=True):
    rows = []
    first_svi = True
    for sec in sections:
        release_compiled_programs()
        target, source, K = her2st_protocol(sec)
        truth = target.obs["label"].to_numpy()
        row = {"section": sec, "K": K, "n": target.n_obs}
        if baselines:
            prep = prepare(target, source, "label", DataSettings())
            row["PCA + k-means"] = tb.adjusted_rand_index(pca_kmeans(prep.X, q, K, seed), truth)
            row["PCA + GMM"] = tb.adjusted_rand_index(pca_gmm(prep.X, q, K, seed), truth)
        for name, kw in methods.items():
            t0 = time.perf_counter()
            res = tb.fit_em(target, source, "label", n_domains=K, n_factors=q, seed=seed, **kw)
            dt = time.perf_counter() - t0
            row[name] = tb.adjusted_rand_index(res.labels, truth)
            row[f"{name} s"] = dt
            if name == "TransST (EM)":
                row["beta"], row["tau"] = res.beta, res.tau
                t0 = time.perf_counter()
                tb.fit_em(target, source, "label", n_domains=K, n_factors=q, seed=seed, **kw)
                row["warm s"] = time.perf_counter() - t0
        if svi:
            for again in ([False, True] if first_svi else [False]):
                t0 = time.perf_counter()
                res = tb.fit_svi(target, source, "label", n_domains=K, n_factors=q, seed=seed,
                                 guide="normal")
                dt = time.perf_counter() - t0
                row["SVI again s" if again else f"{SVI} s"] = dt
            first_svi = False
            row[SVI] = tb.adjusted_rand_index(res.labels, truth)
            row["SVI rounds"] = int(res.info["svi_rounds"])
            row["SVI converged"] = bool(res.k_table[0]["converged"])
        rows.append(row)
        print(f"{sec}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)),
              flush=True)
    return rows


def _one_svi(sec: str, seed: int) -> dict:
    """One SVI fit in this (new) process; the seconds exclude reading the data."""
    target, source, K = her2st_protocol(sec)
    t0 = time.perf_counter()
    res = tb.fit_svi(target, source, "label", n_domains=K, n_factors=15, seed=seed, guide="normal")
    return {"section": sec, "K": K, "n": target.n_obs, "SVI s": time.perf_counter() - t0,
            "SVI": tb.adjusted_rand_index(res.labels, target.obs["label"].to_numpy()),
            "rounds": int(res.info["svi_rounds"])}


def fresh(sections, seed: int) -> list[dict]:
    import json
    import subprocess
    import sys

    rows = []
    for sec in sections:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--one-svi", sec, "--seed", str(seed)],
                             check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["process s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{sec}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)),
              flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sections", nargs="*", default=her2st_sections())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--svi", action="store_true", help="add a TransST (SVI, AutoNormal) column")
    ap.add_argument("--svi-only", action="store_true", help="TransST (EM) and (SVI) only")
    ap.add_argument("--svi-fresh", action="store_true",
                    help="SVI only, each section in a new Python process")
    ap.add_argument("--one-svi", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.one_svi:
        import json

        print(json.dumps(_one_svi(args.one_svi, args.seed)))
        return
    if args.svi_fresh:
        rows = fresh(args.sections, args.seed)
        mean = {"section": "mean", "K": "", "n": ""}
        for c in ("SVI", "SVI s", "process s", "rounds"):
            mean[c] = float(np.mean([r[c] for r in rows]))
        print()
        print(markdown_table(rows + [mean], ["section", "K", "n", "SVI", "SVI s", "process s", "rounds"],
                            {"SVI s": "{:.1f}", "process s": "{:.1f}", "rounds": "{:.1f}"}))
        t = np.array([r["SVI s"] for r in rows])
        print(f"\nfit_svi seconds, each section in a new process: median {np.median(t):.1f}, "
              f"max {t.max():.1f}, {int(np.sum(t < 30))} of {len(t)} under 30 s")
        write_json(args.json, {"rows": rows, "mean": mean})
        return
    methods = {"TransST (EM)": METHODS["TransST (EM)"]} if args.svi_only else METHODS
    svi = args.svi or args.svi_only
    rows = run(args.sections, seed=args.seed, methods=methods, svi=svi,
               baselines=not args.svi_only)
    names = list(methods) + ([SVI] if svi else []) + \
        ([] if args.svi_only else ["PCA + k-means", "PCA + GMM"])
    mean = {"section": "mean", "K": "", "n": ""}
    timing = ["TransST (EM) s", "warm s"] + ([f"{SVI} s"] if svi else [])
    for c in names + timing:
        mean[c] = float(np.mean([r[c] for r in rows]))
    svi_time = None
    if svi:
        mean["SVI rounds"] = float(np.mean([r["SVI rounds"] for r in rows]))
        # the first fit of the process excluded: the second fit of the first section instead
        rest = [rows[0]["SVI again s"]] + [r[f"{SVI} s"] for r in rows[1:]]
        svi_time = {"first": rows[0][f"{SVI} s"], "rest_median": float(np.median(rest)),
                    "rest_mean": float(np.mean(rest)), "rest_max": float(np.max(rest)),
                    "n_rest": len(rest), "n_rest_under_30s": int(np.sum(np.array(rest) < 30))}
    cols = ["section", "K", "n"] + names + ["beta", "tau"] + timing
    if svi:
        cols += ["SVI again s", "SVI rounds", "SVI converged"]
    fmt = {"TransST (EM) s": "{:.1f}", "warm s": "{:.2f}", f"{SVI} s": "{:.1f}",
           "SVI again s": "{:.1f}", "SVI rounds": "{:.1f}"}
    print()
    print(markdown_table(rows + [mean], cols, fmt))
    if svi_time:
        print(f"\nSVI seconds per fit: first of the process {svi_time['first']:.1f}; the other "
              f"{svi_time['n_rest']} fits: median {svi_time['rest_median']:.1f}, mean "
              f"{svi_time['rest_mean']:.1f}, max {svi_time['rest_max']:.1f}, "
              f"{svi_time['n_rest_under_30s']} under 30 s")
    write_json(args.json, {"rows": rows, "mean": mean, "svi_time": svi_time})


if __name__ == "__main__":
    main()
