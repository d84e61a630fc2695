"""Behaviour unchanged? The default fits' labels and probabilities on simulated data (fit_em and
fit_svi) and on HER2ST H1, seqFISH embryo2_z5 and DLPFC 151676 (fit_em), saved before a change and compared after it.

    python benchmarks/same_labels.py save before.npz      # on the old tree
    python benchmarks/same_labels.py compare before.npz   # on the new one: equal or not, per fit

Prints one line per array: whether it is bit-identical, and the largest difference.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from real_data import transfer_protocol

import transst_bayes as tb


def fits() -> dict:
    out = {}
    src, tgt = tb.simulate(0, height=20, width=20, n_genes=200, n_factors=5, n_domains=3, source_sections=2)
    r = tb.fit_em(tgt, src, n_domains=3, n_factors=5)
    out["sim_em"], out["sim_em_p"] = r.labels, r.proba
    r = tb.fit_svi(tgt, src, n_domains=3, n_factors=5, num_samples=20)
    out["sim_svi"], out["sim_svi_p"] = r.labels, r.proba
    for data, sec in (("her2st", "H1"), ("seqfish", "embryo2_z5"), ("dlpfc", "151676")):
        t, s, K, lk, o = transfer_protocol(data, sec)
        r = tb.fit_em(t, s, label_key=lk, n_domains=K, **o)
        out[data], out[data + "_p"] = r.labels, r.proba
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("save", "compare"):
        print(__doc__)
        return 2
    warnings.simplefilter("ignore")
    now = fits()
    if argv[0] == "save":
        np.savez(argv[1], **now)
        print(f"saved {sorted(now)} to {argv[1]}")
        return 0
    before = np.load(argv[1])
    same = True
    for k in before.files:
        eq = bool(np.array_equal(before[k], now[k]))
        same &= eq
        print(f"{k}: {'identical' if eq else 'DIFFERENT'} (largest difference "
              f"{float(np.abs(before[k] - now[k]).max()):.3g})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
