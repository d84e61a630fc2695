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

from typing import Callable, NamedTuple, Sequence

import numpy as np

from .metrics import expected_calibration_error, named_predictions

TEMPERATURES = tuple(float(t) for t in np.exp(np.linspace(0.0, np.log(50.0), 40)))
SECTION_KEYS = ("library_id", "section", "sample", "batch")  # looked for when no key is given
N_FOLDS = 4  # folds of spatial tiles held out in turn when the source's sections are not named...
TILE_GRID = 8  # ... from a TILE_GRID x TILE_GRID grid of tiles, dealt to the folds diagonally
MIN_FOLD_SOURCE_SPOTS = 1000  # a source with fewer spots keeps the model's probabilities


class Holdout(NamedTuple):
    """How the source is held out: `groups` (a group of each spot; None: not at all), `how` (the
    scheme in words, or why not) and `in_context` (each group's spots are fitted inside the
    whole source, the other groups' labels kept, instead of on their own)."""

    groups: np.ndarray | None
    how: str
    in_context: bool = False


def spatial_folds(coords: np.ndarray, n_folds: int = N_FOLDS, grid: int = TILE_GRID) -> np.ndarray:
    """Fold of each spot: the spots cut into `grid` x `grid` tiles of (nearly) equal spot count
    per row and per column, tile (i, j) dealt to fold (i + j) mod `n_folds`. Each fold is spread
    over the whole section (every row and every column of tiles holds each fold), so that every
    class keeps labeled spots outside each fold, and each tile is a contiguous region whose
    spots are not the neighbours of the labeled spots they are scored against (except at its
    edge)."""
    xy = np.asarray(coords, dtype=float)[:, :2]
    n = max(len(xy), 1)

    def cut(v):
        return np.argsort(np.argsort(v, kind="stable"), kind="stable") * grid // n

    return ((cut(xy[:, 0]) + cut(xy[:, 1])) % n_folds).astype(np.int64)


def held_out_groups(source, key: str | None, spatial_key: str) -> Holdout:
    """What the source is held out by: named sections (`key`) when there are two or more, each
    fitted on its own; else folds of spatial tiles (`spatial_folds`), each fitted in context
    (the whole source as the target, the fold's labels withheld, scored on the fold's spots),
    when the source holds at least MIN_FOLD_SOURCE_SPOTS spots; nothing without coordinates."""
    if spatial_key not in source.obsm:
        return Holdout(None, f"the source has no coordinates in obsm[{spatial_key!r}]")
    bad = int((~np.isfinite(np.asarray(source.obsm[spatial_key], dtype=float)[:, :2])).any(axis=1).sum())
    if bad:
        raise ValueError(f"source.obsm[{spatial_key!r}] holds NaN or inf for {bad} spots: the held-out fits of "
                         "transfer='auto' and calibrate='auto' fit the source's spots by their coordinates; "
                         "drop or fix those spots, or pass transfer='eb' and calibrate='none' (or a temperature)")
    if key is not None and source.obs[key].nunique() >= 2:
        return Holdout(source.obs[key].astype(str).to_numpy(), f"source sections (obs[{key!r}])")
    if source.n_obs < MIN_FOLD_SOURCE_SPOTS:
        return Holdout(None, f"the source's sections are not named and its {source.n_obs} spots are too few "
                             f"to hold out in spatial folds (at least {MIN_FOLD_SOURCE_SPOTS}); name its "
                             "sections' obs column with source_batch_key=..., or pass calibrate=T")
    return Holdout(spatial_folds(np.asarray(source.obsm[spatial_key])).astype(str),
                   f"spatial folds ({N_FOLDS} folds of {TILE_GRID} x {TILE_GRID} tiles of the source's spots, "
                   "each fitted in context)", True)


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


def held_out_fits(source, label_key: str, holdout: Holdout, spatial_key: str, fit: Callable,
                  progress: str | None = None, alone: bool = False) -> list:
    """Each group of `source`'s spots (`held_out_groups`) fitted as a target from the other
    groups by `fit(target, source, label_key, n_domains)`: [(names, proba, labels)] of the
    group's spots; (None, None, labels) for a group whose fit collapsed numerically
    (FloatingPointError). A named section is fitted on its own, with K its classes; a fold of
    spatial tiles (`holdout.in_context`) inside the whole source, with K the source's classes.
    `alone`: the fit reads no source (transfer "none"), so with folds fitted in place one fit of
    the whole source without one (`fit(source, None, ...)`) serves every fold: withholding a
    fold's labels changes nothing it reads. Groups without enough spots or labels to fit are
    skipped. `progress`: the description of a progress bar over the groups (None: no bar)."""
    held = []
    groups = np.asarray(holdout.groups)
    todo = np.unique(groups)
    if progress is not None:  # a tqdm bar described by `progress`
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=progress)
    labels = source.obs[label_key].astype(str).to_numpy()
    once = alone and holdout.in_context
    shared = None  # the one fit of the whole source that serves every fold (`once`)
    for h in todo:
        inner = groups == h
        truth = labels[inner]
        K = int(np.unique(labels if holdout.in_context else truth).size)
        if np.unique(truth).size < 2 or inner.sum() < 4 * K or spatial_key not in source.obsm:
            continue
        try:
            if once:
                shared = fit(source.copy(), None, label_key, K) if shared is None else shared
                res = shared
            else:
                tgt = source.copy() if holdout.in_context else source[inner].copy()
                res = fit(tgt, source[~inner].copy(), label_key, K)
        except FloatingPointError:  # this section's collapse is not the target's
            held.append((None, None, truth))
            continue
        proba = np.asarray(res.proba)
        held.append((list(res.names), proba[inner] if holdout.in_context else proba, truth))
    return held
