"""The two fitting paths' defaults side by side on real tissue: `fit_em(target, source, label_key,
n_domains=K)` and `fit_svi(...)` with the same arguments, every other setting at its default
(transfer="auto", calibrate="auto", anchored domains; fit_svi: AutoNormal guide, 100 draws),
on every section of HER2ST (leave one section out), the seqFISH mouse embryo (one section
against the other embryos) and the DLPFC Visium pair (one section from the other; K = 7;
unannotated target spots are fitted but not scored). Protocols: ../shared/data/README.md.

Columns per section: ARI against the annotation for each path; ARI between the two paths'
labels; ECE of the per-spot maximum probability (`metrics.calibration_summary`) for each path;
the transfer mode the default chose; seconds per call (each includes its held-out fits).

    python benchmarks/em_vs_svi.py --data her2st|seqfish|dlpfc [--sections ...] [--json out.json]

A run over every section writes its table into benchmarks/README.md (`--from-json out.json`
writes a saved run's table instead of fitting again).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from _common import (chosen_sections, markdown_table, mean_row, publish, release_compiled_programs,
                     section_parser, table_spec, write_json)
from real_data import transfer_protocol

import transst_bayes as tb
from transst_bayes.metrics import calibration_summary, named_predictions

PATHS = {"EM": tb.fit_em, "SVI": tb.fit_svi}


def run(data: str, sections, seed: int = 0) -> list[dict]:
    rows = []
    for sec in sections:
        release_compiled_programs()
        target, source, K, label, opts = transfer_protocol(data, sec)
        truth = target.obs[label].astype(str).to_numpy()
        scored = target.obs[label].notna().to_numpy()
        row = {"section": sec, "K": K, "n": target.n_obs}
        pred = {}
        for name, fit in PATHS.items():
            t0 = time.perf_counter()
            res = fit(target, source, label, n_domains=K, seed=seed, **opts)
            row[f"{name} s"] = time.perf_counter() - t0
            P = res.proba[scored]
            pred[name], _ = named_predictions(res.names, P, truth[scored])
            row[f"{name} ARI"] = tb.adjusted_rand_index(pred[name], truth[scored])
            row[f"{name} ECE"] = calibration_summary(res.names, P, truth[scored])["ece"]
            row[f"{name} domains"] = int(np.unique(res.labels).size)
            row["chosen"] = res.info.get("transfer_choice", {}).get("chosen", "eb")
        row["EM vs SVI ARI"] = tb.adjusted_rand_index(pred["EM"], pred["SVI"])
        rows.append(row)
        print(f"{sec}: EM {row['EM ARI']:.3f}, SVI {row['SVI ARI']:.3f} ({row['chosen']}; "
              f"{row['EM s']:.0f} s, {row['SVI s']:.0f} s)", flush=True)
    return rows


COLUMNS = ["section", "K", "n", "chosen", "EM ARI", "SVI ARI", "EM vs SVI ARI", "EM ECE", "SVI ECE",
           "EM domains", "SVI domains", "EM s", "SVI s"]


TITLES = {"her2st": "HER2ST, leave one section out", "seqfish": "seqFISH mouse embryo, between embryos",
          "dlpfc": "DLPFC Visium pair"}
PROTOCOL = ("Default `fit_em(target, source, label_key, n_domains=K)` and `fit_svi(...)` with the same "
            "arguments (every other setting at its default; each call's seconds include its held-out "
            "fits; fit_svi runs second in the same process and reuses the compiled programs of "
            "fit_em's identical held-out fits, so its seconds hold little compilation). ARI of each "
            "spot's most probable domain (as in the transfer tables) against the annotation (DLPFC: "
            "annotated spots only); \"EM vs SVI ARI\": "
            "agreement of the two paths' labels; ECE of the per-spot maximum probability; \"chosen\": "
            "the transfer mode the default chose; \"domains\": domains holding a spot.")


def main():
    ap = section_parser(__doc__)
    ap.add_argument("--from-json", default=None, help="write the table of a saved run (its --json)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    record = None
    if args.from_json:
        import json

        saved = json.loads(open(args.from_json).read())
        rows, record = saved["rows"], saved.get("record")
    else:
        rows = run(args.data, chosen_sections(args), args.seed)
    fmt = {"EM s": "{:.0f}", "SVI s": "{:.0f}"}
    print()
    print(markdown_table(rows + [mean_row(rows)], COLUMNS, fmt))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if not args.from_json:
        write_json(args.json, {"rows": rows, "mean": mean_row(rows)})
    if args.sections is None:
        publish(f"fit_em and fit_svi defaults: {TITLES[args.data]}", PROTOCOL,
                [table_spec(rows + [mean_row(rows)], COLUMNS, fmt)], record)


if __name__ == "__main__":
    main()
