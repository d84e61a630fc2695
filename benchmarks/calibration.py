"""Calibration on real tissue: the default fit's per-spot domain probabilities, which
are tempered by a temperature chosen on held-out *source* sections (transst_bayes.calibration:
each source section fitted as a target from the others; the T of p_T(k) ~ p(k)^(1/T) with the
least pooled ECE against their labels), against the model's own probabilities
(`calibrate="none"`), on the protocols of benchmarks/transfer.py. Tempering keeps every spot's
most probable domain, so ARI is the same in both.

Printed per target: T, the held-out sections' ECE at T = 1 and at T (from
`res.info["calibration"]`), the target's accuracy, the least ECE any probabilities could reach
with that accuracy when the annotation has K labels ("ECE floor" = max(0, 1/K - accuracy): the
maximum probability is at least 1/K), mean maximum probability, ECE and Brier score with and
without calibration (named domains read as their class, others by Hungarian matching, as in
transfer.py), ARI, and the seconds of the calibrated fit (held-out fits included). "oracle T" and
"oracle ECE": the temperature of the model's own probabilities that is best *for the target's
own annotation* (least ECE over a grid from 0.2 to 1000) and that ECE: not a method (it needs the
target's labels) but the least ECE any temperature could reach on that fit, whichever way it
were chosen. "90% set cover" / "size": the conformal domain sets at alpha = 0.1
(`res.domain_sets(0.1)`, thresholds from the same held-out fits): the share of annotated spots
whose set holds their label, and the mean number of domains per set; "model 90% cover" /
"size": the uncalibrated model's own sets (most probable domains until 90% of the mass).

    python benchmarks/calibration.py --data her2st|seqfish|dlpfc [--no-sections] [--sections ...]
        [--json out.json]

--no-sections drops the source's section columns, so that it is held out in folds of spatial tiles
(DLPFC: the source is one section, held out in tile folds either way). Unannotated target spots
(DLPFC) are fitted but not scored.

With ``--markers`` each target is instead fitted by `fit_svi` (defaults: anchored domains,
AutoNormal, 100 draws, calibrate="auto") and the marker table (`summary.marker_genes`) is read at
T = 1 (the posterior as fitted) and at the fit's temperature (the draws widened by sqrt(T)):
printed are T and, for each, the number of (domain, gene) contrasts with lfsr < 0.05 and with a
90% interval that excludes 0.

    python benchmarks/calibration.py --data her2st --markers --sections H1 C1
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from _common import (chosen_sections, markdown_table, mean_row, publish, release_compiled_programs, section_parser,
                     table_spec, write_json)
from real_data import transfer_protocol

import transst_bayes as tb
from transst_bayes.calibration import SECTION_KEYS, choose_temperature
from transst_bayes.metrics import calibration_summary, domain_labels
from transst_bayes.summary import marker_genes


ORACLE_GRID = tuple(float(t) for t in np.exp(np.linspace(np.log(0.2), np.log(1000.0), 80)))


def set_coverage(names, proba, sets, truth) -> tuple[float, float]:
    """Share of spots whose set of domains (read as labels: `domain_labels`) holds the truth,
    and the mean set size."""
    lab = np.asarray(domain_labels(names, proba, truth), dtype=object)
    hit = (sets & (lab[None, :] == np.asarray(truth)[:, None])).any(axis=1)
    return float(hit.mean()), float(sets.sum(axis=1).mean())


def mass_sets(proba, level: float = 0.9) -> np.ndarray:
    """The model's own sets: each spot's most probable domains until `level` of its mass."""
    order = np.argsort(-proba, axis=1)
    n_in = (np.cumsum(np.take_along_axis(proba, order, 1), axis=1) < level).sum(axis=1) + 1
    sets = np.zeros(proba.shape, bool)
    for j, (o, m) in enumerate(zip(order, n_in)):
        sets[j, o[:m]] = True
    return sets


def run(data: str, sections, seed=0, no_sections=False):
    rows = []
    for sec in sections:
        release_compiled_programs()
        target, source, K, label, opts = transfer_protocol(data, sec)
        if no_sections:  # a source whose sections are not named: held out in folds of spatial tiles
            source.obs = source.obs.drop(columns=[c for c in SECTION_KEYS if c in source.obs])
        scored = target.obs[label].notna().to_numpy()  # DLPFC: ~1% unannotated spots
        truth = target.obs[label].astype(str).to_numpy()[scored]
        raw = tb.fit_em(target, source, label, n_domains=K, seed=seed, calibrate="none", **opts)
        t0 = time.perf_counter()
        cal = tb.fit_em(target, source, label, n_domains=K, seed=seed, **opts)
        secs = time.perf_counter() - t0
        a = calibration_summary(raw.names, raw.proba[scored], truth)
        b = calibration_summary(cal.names, cal.proba[scored], truth)
        held = cal.info["calibration_ece"] or [np.nan, np.nan]
        K_t = len(np.unique(truth))
        T_oracle, e_oracle = choose_temperature([(raw.names, raw.proba[scored], truth)], ORACLE_GRID)
        scheme = cal.info.get("held_out", "none")
        sets = {}
        for alpha in (0.1, 0.2):
            sets[alpha] = (set_coverage(cal.names, cal.proba[scored], cal.domain_sets(alpha)[scored], truth)
                           if cal.info.get("conformal") else (float("nan"), float("nan")))
        own_cover, own_size = set_coverage(raw.names, raw.proba[scored], mass_sets(raw.proba[scored]), truth)
        rows.append({"section": sec, "held out": "tile folds" if scheme.startswith("spatial") else scheme.split(" (")[0],
                     "T": cal.info["temperature"], "held-out ECE (T=1)": held[0],
                     "held-out ECE (T)": held[1], "accuracy": a["accuracy"],
                     "ECE floor": max(0.0, 1.0 / K_t - a["accuracy"]),
                     "mean max p": a["mean_confidence"], "ECE": a["ece"], "Brier": a["brier"],
                     "mean max p (calibrated)": b["mean_confidence"], "ECE (calibrated)": b["ece"],
                     "Brier (calibrated)": b["brier"], "oracle T": T_oracle,
                     "oracle ECE": float(np.min(e_oracle)),
                     "ARI": tb.adjusted_rand_index(cal.labels[scored], truth),
                     "ARI uncalibrated": tb.adjusted_rand_index(raw.labels[scored], truth),
                     "90% set cover": sets[0.1][0], "90% set size": sets[0.1][1],
                     "80% set cover": sets[0.2][0], "80% set size": sets[0.2][1], "model 90% cover": own_cover,
                     "model 90% size": own_size, "s": secs})
        print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
              flush=True)
    return rows


def markers(data: str, sections, seed=0):
    rows = []
    for sec in sections:
        release_compiled_programs()
        target, source, K, label, opts = transfer_protocol(data, sec)
        t0 = time.perf_counter()
        res = tb.fit_svi(target, source, label, n_domains=K, seed=seed, **opts)
        row = {"section": sec, "T": res.info["temperature"], "s": time.perf_counter() - t0}
        for name, T in (("T=1", 1.0), ("calibrated", None)):
            m = marker_genes(res, temperature=T)
            row[f"lfsr<0.05 ({name})"] = int((m["lfsr"] < 0.05).sum())
            row[f"90% CI excludes 0 ({name})"] = int(((m["ci_low"] > 0) | (m["ci_high"] < 0)).sum())
        row["contrasts"] = int(len(m))
        rows.append(row)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


PROTOCOL = (
    "The default call (`calibrate=\"auto\"`, `transfer=\"auto\"`), whose probabilities are tempered "
    "by the temperature T that calibrates fits of the held-out source sections, beside the model's "
    "own probabilities (`calibrate=\"none\"`). Accuracy: named domains read as their class, others by "
    "Hungarian matching; ECE of the maximum probability against it, 10 bins. \"ECE floor\": the least "
    "ECE possible when the accuracy is below 1/K. \"oracle T\" / \"oracle ECE\": the temperature best "
    "for the target's own annotation (least ECE over 80 temperatures from 0.2 to 1000) and the ECE "
    "it reaches: not a method (it needs the target's labels) but the least ECE any temperature "
    "could reach on that fit. \"90% set cover\" / \"90% set size\": the conformal domain sets at "
    "alpha = 0.1 (`res.domain_sets(0.1)`, split conformal on the same held-out fits): the share of "
    "annotated spots whose set holds their label and the mean domains per set (\"80% set\": the same "
    "at alpha = 0.2); \"model 90% cover\" / "
    "\"size\": the uncalibrated model's own sets (most probable domains until 90% of the mass). "
    "\"s\": the calibrated call, its held-out fits included, made right "
    "after the uncalibrated one, which compiled the programs.")
MARKERS_PROTOCOL = (
    "`fit_svi` defaults, 100 draws: contrasts (domain x gene) with lfsr < 0.05 and with a 90% "
    "interval that excludes 0, at T = 1 and at the fit's temperature T (the draws are widened by "
    "sqrt(T) around their mean, `summary.widen`).")


def main():
    ap = section_parser(__doc__)
    ap.add_argument("--markers", action="store_true", help="marker lfsr before and after calibration (fit_svi)")
    ap.add_argument("--no-sections", action="store_true",
                    help="drop the source's section columns (it is then held out in folds of spatial tiles)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    sections = chosen_sections(args)
    t0 = time.perf_counter()
    if args.markers:
        rows = markers(args.data, sections, args.seed)
        fmt = {"s": "{:.0f}", "T": "{:.2f}"}
        print(markdown_table(rows, list(rows[0]), fmt))
        write_json(args.json, {"rows": rows})
        publish(f"Marker genes before and after calibration: {args.data}", MARKERS_PROTOCOL,
                [table_spec(rows, list(rows[0]), fmt)])
        return
    rows = run(args.data, sections, args.seed, args.no_sections)
    mean = mean_row(rows)
    cols = list(rows[0])
    fmt = {"s": "{:.0f}", "T": "{:.2f}", "oracle T": "{:.1f}"}
    print(markdown_table(rows + [mean], cols, fmt))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": rows, "mean": mean})
    if args.sections is None:
        unnamed = ", source sections not named" if args.no_sections else ""
        publish(f"Calibration of the per-spot probabilities: {args.data}{unnamed}", PROTOCOL,
                [table_spec(rows + [mean], cols, fmt)])


if __name__ == "__main__":
    main()
