"""Domain sets per spot with a stated coverage: split conformal prediction on the held-out
source fits that calibration already makes.

Each held-out source section (or fold of spatial tiles) was fitted as a target from the others, exactly
as the real target is, and its spots' labels are known. Their conformity score is
s = 1 - p_T(true label) (the tempered probability of the domain read as the spot's label; 0 when
no domain is). For a miscoverage alpha, the threshold is the ceil((n + 1)(1 - alpha))-th smallest
of the n pooled scores, and a target spot's set holds every domain with p_T(k) >= 1 - threshold
(and always its most probable domain and the fit's label, so no set is empty). When the held-out spots and the
target's are exchangeable, P(true domain in set) >= 1 - alpha; the target is another section,
so the coverage it reaches is measured, not promised (`benchmarks/calibration.py`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .metrics import domain_labels

# the miscoverage levels a fit stores thresholds for (0.01, 0.02, ..., 0.50)
ALPHAS = tuple(round(0.01 * i, 2) for i in range(1, 51))


def true_label_proba(names, proba: np.ndarray, truth) -> np.ndarray:
    """Per spot, the probability of the domain(s) read as its true label (`domain_labels`)."""
    truth = np.asarray(truth).astype(str)
    labels = np.asarray(domain_labels(names, proba, truth), dtype=object)
    match = labels[None, :] == truth[:, None]
    return np.sum(np.where(match, np.asarray(proba, np.float64), 0.0), axis=1)


def thresholds(held: Sequence[tuple], temper, T: float) -> dict | None:
    """The conformal thresholds at every level of ALPHAS from held-out fits [(names, proba,
    truth)] tempered by T (`temper(proba, T)`); None when no fit is usable."""
    scores = [1.0 - true_label_proba(names, temper(proba, T), truth)
              for names, proba, truth in held if names is not None]
    if not scores:
        return None
    s = np.sort(np.concatenate(scores))
    n = s.size
    out = []
    for a in ALPHAS:
        rank = math.ceil((n + 1) * (1.0 - a))
        out.append(1.0 if rank > n else float(s[rank - 1]))  # too few spots for this level: every domain
    return {"alphas": list(ALPHAS), "thresholds": out, "n_spots": int(n), "temperature": float(T)}


def domain_sets(proba: np.ndarray, conformal: dict, alpha: float, labels=None) -> np.ndarray:
    """(n, K) boolean: the domains in each spot's set at miscoverage `alpha` (one of ALPHAS),
    with each spot's most probable domain and its reported domain (`labels`) always in."""
    alphas = [round(float(a), 2) for a in conformal["alphas"]]
    key = round(float(alpha), 2)
    if not isinstance(alpha, (int, float)) or key not in alphas or abs(key - float(alpha)) > 1e-9:
        raise ValueError(f"alpha must be one of 0.01, 0.02, ..., 0.50 (the levels the fit stored), got {alpha!r}")
    t = conformal["thresholds"][alphas.index(key)]
    proba = np.asarray(proba, np.float64)
    sets = proba >= 1.0 - t - 1e-12
    rows = np.arange(proba.shape[0])
    sets[rows, np.argmax(proba, axis=1)] = True
    if labels is not None:
        sets[rows, np.asarray(labels)] = True
    return sets
