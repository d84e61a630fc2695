"""Calibrated per-spot domain probabilities: a temperature chosen on held-out source sections.

The model's per-spot probabilities are far too sure on real tissue (mean maximum probability
0.99 where 73-82% of the spots are right on seqFISH): the Potts mean field and a Gaussian
likelihood over many genes put almost all mass on one domain, and tempering the likelihood
inside the fit does not help (the learned beta rises and the field keeps the certainty). The
labeled source is the calibration set: each source section is held out in turn and fitted as a
target from the others, exactly as the real target is; the temperature T of the final
log-probabilities, p_T(k) proportional to p(k)^(1/T), that makes those held-out fits calibrated
(least pooled ECE of the maximum probability against their own labels) is applied to the
target. Tempering keeps every spot's most probable domain, so labels and ARI do not change.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .metrics import expected_calibration_error, named_predictions

TEMPERATURES = tuple(float(t) for t in np.exp(np.linspace(0.0, np.log(50.0), 40)))
SECTION_KEYS = ("library_id", "section", "sample", "batch")  # looked for when no key is given
N_BLOCKS = 4  # spatial blocks held out in turn when the source's sections are not named...
MIN_BLOCK_SPOTS = 500  # ... each at least the size of a small section (else nothing is held out)


def spatial_blocks(coords: np.ndarray, n_blocks: int = N_BLOCKS) -> np.ndarray:
    """Block of each spot: `n_blocks` stripes of (nearly) equal spot count across the longer
    side of the coordinates' bounding box, so that each block is a contiguous region (for a
    concatenation of sections in their own coordinates: a region of each)."""
    xy = np.asarray(coords, dtype=float)[:, :2]
    axis = int(np.argmax(np.ptp(xy, axis=0)))
    rank = np.argsort(np.argsort(xy[:, axis], kind="stable"), kind="stable")
    return (rank * n_blocks // max(len(rank), 1)).astype(np.int64)


def held_out_groups(source, key: str | None, spatial_key: str) -> tuple:
    """What the source is held out by: (group of each spot, how: the scheme in words), or
    (None, why not). Named sections (`key`) when there are two or more; else spatial blocks of
    the source's spots when each holds at least MIN_BLOCK_SPOTS; nothing without coordinates."""
    if spatial_key not in source.obsm:
        return None, f"the source has no coordinates in obsm[{spatial_key!r}]"
    if key is not None and source.obs[key].nunique() >= 2:
        return source.obs[key].astype(str).to_numpy(), f"source sections (obs[{key!r}])"
    if source.n_obs < N_BLOCKS * MIN_BLOCK_SPOTS:
        return None, (f"the source's sections are not named and its {source.n_obs} spots are too few "
                      f"to hold out in {N_BLOCKS} spatial blocks of at least {MIN_BLOCK_SPOTS}; name its "
                      "sections' obs column with source_batch_key=..., or pass calibrate=T")
    return (spatial_blocks(np.asarray(source.obsm[spatial_key])).astype(str),
            f"spatial blocks ({N_BLOCKS} stripes of the source's spots)")


def temper(proba: np.ndarray, T: float) -> np.ndarray:
    """Rows of `proba` raised to 1/T and renormalised (T = 1: unchanged; T -> inf: uniform)."""
    L = np.log(np.clip(np.asarray(proba, np.float64), 1e-300, None)) / float(T)
    L -= L.max(axis=-1, keepdims=True)
    E = np.exp(L)
    return E / E.sum(axis=-1, keepdims=True)


def pooled_ece(held: Sequence[tuple], T: float) -> float:
    """ECE over held-out fits [(domain names, proba, true labels), ...] tempered by T (fits that
    collapsed, names None, are left out)."""
    conf, ok = [], []
    for names, proba, truth in held:
        if names is None:
            continue
        pred, c = named_predictions(names, temper(proba, T), truth)
        conf.append(c)
        ok.append(pred == np.asarray(truth).astype(str))
    return expected_calibration_error(np.concatenate(conf), np.concatenate(ok))


def choose_temperature(held: Sequence[tuple], grid: Sequence[float] = TEMPERATURES) -> tuple[float, np.ndarray]:
    """The grid temperature with the least pooled held-out ECE (the smallest on ties), and the
    ECE at every grid point."""
    e = np.array([pooled_ece(held, T) for T in grid])
    return float(grid[int(np.argmin(e))]), e


def section_key(source, key: str | None) -> str | None:
    """The obs column that names the source's sections: `key`, else the first of SECTION_KEYS
    with at least two values; None when there is none."""
    if key is not None:
        if key not in source.obs:
            raise ValueError(f"source_batch_key={key!r} is not a column of source.obs; pass an obs "
                             "column that names the source's sections, or calibrate='none'")
        return key
    for k in SECTION_KEYS:
        if k in source.obs and source.obs[k].nunique() >= 2:
            return k
    return None


def held_out_fits(source, label_key: str, groups: np.ndarray, spatial_key: str, fit: Callable,
                  progress: str | None = None) -> list:
    """Each group of `source`'s spots (its sections, or spatial blocks: `held_out_groups`) fitted
    as a target from the other groups by `fit(target, source, label_key, n_domains)`:
    [(names, proba, labels)]; (None, None, labels) for a group whose fit collapsed numerically
    (FloatingPointError). Groups without enough spots or labels to fit are skipped. `progress`:
    the description of a progress bar over the groups (None: no bar)."""
    held = []
    groups = np.asarray(groups)
    todo = np.unique(groups)
    if progress is not None:  # a tqdm bar described by `progress`
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=progress)
    for h in todo:
        inner = groups == h
        tgt, src = source[inner].copy(), source[~inner].copy()
        truth = tgt.obs[label_key].astype(str).to_numpy()
        K = int(np.unique(truth).size)
        if K < 2 or tgt.n_obs < 4 * K or spatial_key not in tgt.obsm:
            continue
        try:
            res = fit(tgt, src, label_key, K)
        except FloatingPointError:  # this section's collapse is not the target's
            held.append((None, None, truth))
            continue
        held.append((list(res.names), np.asarray(res.proba), truth))
    return held
