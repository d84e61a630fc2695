"""Does the default fit every real data set? `fit_em` with default settings (float32, anchored
domains; both transfer modes the default chooses between) on each real source/target pair in ../shared/data for q in {5, 10, 15, 20, 30} and K in
{2, about C / 2, C} (C = the source's classes): whether it finished with a finite objective, the
smallest noise variance psi_g relative to the floor (a Heywood case drives it there), ARI
against the annotation, seconds.

Pairs: HER2ST A1 (the other seven sections as the source), seqFISH embryo1_z2 (the other
embryos), HER2ST H1 with the Wu et al. 2021 breast scRNA-seq (celltype_major) as the source.

    python benchmarks/robustness.py [--pairs her2st seqfish scrna] [--calibrate none|auto]
                                    [--transfer eb none] [--json out.json]

`--transfer`: the transfer modes fitted, each a row (default: "eb" and "none", the two that
the default `transfer="auto"` chooses between on held-out source sections; "auto" runs the
choice itself, one more fit per source section and mode).

`--calibrate none` (the default here) skips the held-out source-section fits that the package's
default makes to calibrate the probabilities: they do not change the target's fit (labels,
parameters, objective) and would multiply the run time by the number of source sections.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import markdown_table, publish, release_compiled_programs, table_spec, write_json
from real_data import her2st_protocol, load_her2st_section, load_wu2021, seqfish_protocol

import transst_bayes as tb
from transst_bayes.factor import PSI_FLOOR

QS = (5, 10, 15, 20, 30)


PAIRS = ("her2st", "seqfish", "scrna")


def pairs(which=PAIRS):
    if "her2st" in which:
        t, s, _ = her2st_protocol("A1")
        yield "HER2ST A1", t, s, "label", "label", {}
    if "seqfish" in which:
        t, s, _ = seqfish_protocol("embryo1_z2")
        yield "seqFISH embryo1_z2", t, s, "celltype", "celltype", dict(n_genes=t.n_vars)
    if "scrna" in which:
        t = load_her2st_section("H1")
        t = t[t.obs["label"].astype(str) != "undetermined"].copy()
        yield "HER2ST H1 <- scRNA", t, load_wu2021(), "celltype_major", "label", {}


def run(which=PAIRS, calibrate="none", transfers=("eb", "none")):
    rows = []
    for name, target, source, label, truth_key, opts in pairs(which):
        release_compiled_programs()
        truth = target.obs[truth_key].astype(str).to_numpy()
        C = int(source.obs[label].nunique())
        for K in sorted({2, max(2, C // 2), C}):
            for q, transfer in ((q, m) for q in QS for m in transfers):
                row = {"data": name, "transfer": transfer, "C": C, "K": K, "q": q}
                t0 = time.perf_counter()
                try:
                    res = tb.fit_em(target, source, label, n_domains=K, n_factors=q, transfer=transfer,
                                    calibrate=calibrate, **opts)
                    row.update(finite=bool(np.all(np.isfinite(res.trace))),
                               **{"min psi / floor": float(res.psi.min() / PSI_FLOOR),
                                  "ARI": tb.adjusted_rand_index(res.labels, truth)})
                except Exception as e:  # noqa: BLE001 - the table reports every failure
                    row.update(finite=False, error=f"{type(e).__name__}: {str(e)[:60]}")
                row["s"] = time.perf_counter() - t0
                print(row, flush=True)
                rows.append(row)
    return rows


PROTOCOL = (
    "`fit_em` defaults (float32, anchored domains) for q in {5, 10, 15, 20, 30} and K in {2, C/2, C} "
    "(C: the source's classes), with the calibration and transfer modes of the command line. "
    "\"finite\": the objective is finite; \"min psi / floor\": the smallest noise variance psi_g "
    "over its floor (a Heywood case drives it there).")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=PAIRS)
    ap.add_argument("--calibrate", default="none", choices=("none", "auto"))
    ap.add_argument("--transfer", nargs="*", default=["eb", "none"], choices=("auto", "eb", "none"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    rows = run(args.pairs, args.calibrate, args.transfer)
    cols = ["data", "transfer", "C", "K", "q", "finite", "min psi / floor", "ARI", "s"]
    fmt = {"min psi / floor": "{:.0f}", "ARI": "{:.3f}", "s": "{:.1f}"}
    print(markdown_table(rows, cols, fmt))
    bad = [r for r in rows if not r["finite"]]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} fits finite; total {time.perf_counter() - t0:.0f} s")
    for r in bad:
        print("failed:", r)
    write_json(args.json, rows)
    publish("Robustness over q and K", PROTOCOL, [table_spec(rows, cols, fmt,
            caption=f"{len(rows) - len(bad)} of {len(rows)} fits finished with a finite objective:")])


if __name__ == "__main__":
    main()
