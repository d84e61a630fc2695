"""fit_em: the three TransST steps on the compiled EM/ICM path (the driver: the only place the
EM kernels are compiled), and what every fit does after fitting (`finish`: calibration on
held-out source sections, which are EM fits)."""

from __future__ import annotations

import time
import warnings
from functools import partial
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import calibration as C
from .. import classifier as CL
from .. import plan as D
from .. import validate as V
from ..support import source_support, warn_unsupported
from ..data import DataSettings, Prepared
from ..job import (DEFAULT_N_NOVEL, DOMAIN_MODES, FitJob, check_k, in_mode, k_table_row, mark_chosen,
                   precision, data_used, settings_from, settings_record, setup, source_fit)
from ..metrics import adjusted_rand_index
from ..pca_kmeans import kmeans
from ..result import Diagnostics, SpotOutputs, TargetParams, TransSTResult, entropy
from ..selection import CRITERIA, DEFAULT_CRITERION, criteria
from .. import shard
from .cluster import VARIANTS, ClusterData, Settings, fit_cluster, init
from .loadings import TRANSFER_MODES, fit_transfer, scores
from .source import fit_source

SHORT_EM_ITER = 15  # iterations each restart runs before the best one is continued
DEFAULT_K_NO_SOURCE = 7
KAPPA2_INIT = 0.1
# the power on the expression likelihood beside the classifier's term (weight=None): measured on
# the DLPFC pair and seqFISH (benchmarks/EXPERIMENTS.md, hybrid data term)
HYBRID_WEIGHT = 0.25


@dataclass(frozen=True)
class EMSettings:
    """Model and optimisation settings of the EM path.

    `fit_em` builds one from its arguments; `fit_svi` builds the settings of its EM warm start
    from `n_factors`, `seed`, `dtype`, `domains` and its `em_options` dict, which may set any
    other field below. `check` raises ValueError or TypeError for a bad value.

    Attributes
    ----------
    n_factors : int, default 15
        Number of latent factors q.
    transfer : str, default "auto"
        How the source loadings are transferred: "auto", "eb", "cv" or "none" (see `fit_em`).
    variant : str or None, default None
        Clustering variant: "two_stage" or "joint"; None: "two_stage" for anchored domains,
        "joint" for free ones.
    beta : float or None, default None
        Potts smoothness; None: learned (pseudo-likelihood), a number: fixed.
    beta_init : float, default 1.0
        Starting value of a learned beta.
    criterion : str, default "hbic"
        Criterion that chooses K among several: "sbic", "bic", "mbic", "hbic" or "icl".
    n_restarts : int, default 3
        EM restarts per K; the best one is run on to convergence.
    max_iter : int, default 100
        Largest number of EM iterations per K.
    tol : float, default 1e-4
        Convergence: change of the objective below `tol` nats per spot.
    source_max_iter : int, default 100
        Largest number of iterations of the source factor model (step 1).
    transfer_max_iter : int, default 30
        Iterations of the transfer step's loadings (final for "two_stage", a start for "joint").
    n_mean_field : int, default 1
        Mean-field sweeps of the Potts field per EM iteration.
    weight : float or None, default None
        Power on the expression likelihood (< 1: the Potts prior and the classifier weigh
        more); None: `HYBRID_WEIGHT` when the classifier term is used, else 1.
    classifier : float, default 1.0
        Weight of the source classifier's log-probabilities in the data term of each anchored
        domain (`classifier.py`); 0: the generative term alone.
    seed : int, default 0
        Random seed.
    dtype : str, default "float32"
        "float32" or "float64".
    domains : str, default "anchored"
        "anchored" (domains tied to source classes, with a labeled source) or "free".

    See Also
    --------
    fit_em, SVISettings
    """

    n_factors: int = 15
    transfer: str = "auto"  # "auto" (choose "eb" or "none" on held-out source sections) | "eb" | "cv" | "none"
    variant: str | None = None  # None: "two_stage" for anchored domains, else "joint"
    beta: float | None = None  # None: learned (pseudo-likelihood); a number: fixed
    beta_init: float = 1.0
    criterion: str = DEFAULT_CRITERION
    n_restarts: int = 3
    max_iter: int = 100
    tol: float = 1e-4  # convergence: objective change below tol nats per spot
    source_max_iter: int = 100
    transfer_max_iter: int = 30  # step 2's loadings: final for two_stage, a start for joint
    n_mean_field: int = 1
    weight: float | None = None  # None: HYBRID_WEIGHT with the classifier term, else 1
    seed: int = 0
    dtype: str = "float32"
    domains: str = "anchored"  # "anchored" (with a labeled source) | "free"
    classifier: float = 1.0  # weight of the classifier's term (anchored domains); 0: none

    def check(self) -> None:
        if self.domains not in DOMAIN_MODES:
            raise ValueError(f"domains must be one of {DOMAIN_MODES}, got {self.domains!r}")
        if self.transfer not in ("auto",) + TRANSFER_MODES:
            raise ValueError(f"transfer must be one of {('auto',) + TRANSFER_MODES}, got {self.transfer!r}")
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        V.integer("n_factors", self.n_factors, 1)
        V.integer("n_restarts", self.n_restarts, 1)
        V.integer("max_iter", self.max_iter, 1)
        V.integer("seed", self.seed, 0)
        V.number("tol", self.tol, 0.0, strict=True)
        V.number("weight (power on the expression likelihood)", self.weight, 0.0, strict=True, none_ok=True)
        V.number("classifier (weight of the source classifier's term)", self.classifier, 0.0)
        V.number("beta (None to learn it)", self.beta, 0.0, none_ok=True)

    def expression_weight(self, hybrid: bool) -> float:
        """The power on the expression likelihood of a fit with (`hybrid`) or without the
        classifier's term."""
        if self.weight is not None:
            return float(self.weight)
        return HYBRID_WEIGHT if hybrid else 1.0


def resolve_variant(em: EMSettings, mode: str) -> str:
    """The clustering variant a fit uses: `em.variant`, or by default "two_stage" for domains
    anchored to a labeled source (the loadings stay where the transfer step put them; the joint
    re-fit let the domains drift away from the source classes on seqFISH: README) and "joint"
    (the paper's model) for free domains."""
    if em.variant is not None:
        return em.variant
    return "two_stage" if mode != "none" and em.domains == "anchored" else "joint"


def fit_em(
    target,
    source=None,
    label_key: str = "label",
    n_domains: int | Sequence[int] | None = None,
    *,
    domains: str = "anchored",
    n_novel: int | Sequence[int] = DEFAULT_N_NOVEL,
    n_factors: int = 15,
    transfer: str = "auto",
    variant: str | None = None,
    beta: float | None = None,
    criterion: str = DEFAULT_CRITERION,
    n_restarts: int = 3,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    dtype: str = "float32",
    weight: float | None = None,
    classifier: float = 1.0,
    calibrate: str | float = "auto",
    progress_bar: bool = False,
    devices=None,
    source_labels=None,
    spatial=None,
    **data_options,
) -> TransSTResult:
    """Fit TransST on the compiled EM/ICM path.

    The three TransST steps: a factor model of the labeled source (step 1), the target's
    loadings shrunk towards the source's (step 2, the transfer), and a Gaussian mixture of the
    target's factors under a Potts prior on the spot graph, fitted by EM with mean-field /
    ICM updates (step 3), for every number of domains tried. Several K are compared by
    `criterion`; the per-spot probabilities are then calibrated on held-out source sections
    (`calibrate`).

    Parameters
    ----------
    target : AnnData or array
        The unlabeled section(s): counts or log-normalised values in `X` (or `layer`),
        coordinates in `obsm["spatial"]` (or a Visium / ST lattice in `obs["array_row"]` and
        `obs["array_col"]`, or a graph in `obsp["spatial_connectivities"]`). An array (NumPy or
        scipy.sparse, spots x genes) needs `spatial=`.
    source : AnnData, array or None, default None
        Labeled data with the classes in `obs[label_key]` (an array needs `source_labels=` and
        the target's genes in the same order). Its classes need not be the target's domains.
        None (or transfer="none") fits the target alone.
    label_key : str, default "label"
        Column of `source.obs` holding the source's classes.
    n_domains : int, sequence of int or None, default None
        K, or a list of K to choose from by `criterion`. None: with a labeled source, the source
        classes present in the target plus each number of novel domains in `n_novel` (chosen by
        `criterion`); without a source 7.
    domains : str, default "anchored"
        "anchored" (with a labeled source): domain k is tied to a source class c(k),
        mu_k ~ N(m_c, kappa^2 I) and Sigma_k ~ inverse-Wishart with mode S_c, kappa learned;
        the classes are found from the data and name the domains, extra domains are named
        "novel 1", "novel 2", .... "free": the paper's free clustering of the target's factors
        (domains "0", "1", ...). Without a source (or with transfer="none") domains are free.
    n_novel : int or sequence of int, default (0, 1, 2)
        Number(s) of novel domains tried beside the anchored ones when `n_domains` is None.
    n_factors : int, default 15
        Number of latent factors q (smaller than the numbers of genes and spots).
    transfer : str, default "auto"
        How the source's loadings inform the target's. "auto": the labeled source is held out
        part by part (as for `calibrate`: its sections, else spatial blocks of its spots) and
        each part fitted from the others both with the source ("eb") and without it ("none"),
        and the target is fitted the way that found the held-out parts' annotated domains
        better (higher mean ARI; "eb" on a tie or when the source has no coordinates);
        `info["transfer_choice"]` holds the held-out ARIs and a warning says when the source
        was set aside. "eb": the transfer scale tau learned
        by empirical Bayes. "cv": the published code's cross-validated lambda grid. "none": the
        target alone.
    variant : str or None, default None
        "two_stage" (cluster the factor scores under the transfer step's loadings) or "joint"
        (W_t re-fitted with the domains, the factors integrated out). None: "two_stage" for
        anchored domains, "joint" for free ones.
    beta : float or None, default None
        Potts smoothness: None learns it (pseudo-likelihood), a number >= 0 fixes it.
    criterion : str, default "hbic"
        How K is chosen among several: "hbic", "bic" or "mbic" (with the published code's
        constants), "sbic" (Schwarz's BIC) or "icl". Every criterion is in `k_table`.
    n_restarts : int, default 3
        EM restarts per K: each runs 15 iterations and the best objective runs on to
        convergence.
    max_iter : int, default 100
        Largest number of EM iterations per K.
    tol : float, default 1e-4
        Convergence: the objective changes by less than `tol` nats per spot.
    seed : int, default 0
        Random seed (k-means starts, restarts).
    dtype : str, default "float32"
        "float32" or "float64" (double precision).
    weight : float or None, default None
        Power on the expression likelihood: 1 is the generative model; < 1 tempers it so that
        the Potts prior and the classifier weigh more (a generalised-Bayes choice; the K table
        then uses the tempered objective). None: 0.25 where the classifier term is used
        (anchored domains with a labeled source), else 1.
    classifier : float, default 1.0
        Weight of the discriminative term: a Bayesian multinomial regression of the source's
        classes on its factor scores (MAP here), whose log-probabilities log p(c | v_j) join
        the data term of each domain anchored to class c (a novel domain: the best of these at
        the spot, so that it competes on the expression alone). It makes the
        anchored fit a hybrid of label transfer and clustering: the Potts prior smooths it and
        the domains' Gaussians still adapt to the target. 0: the generative term alone. Used
        only with anchored domains and a source.
    calibrate : str or float, default "auto"
        "auto": when the labeled source has spatial coordinates, it is held out part by part
        and each part fitted from the others, as the target is (with the transfer mode used
        for it; with transfer="none" the domains are matched to the labels by Hungarian
        matching), and the temperature that calibrates those fits' per-spot probabilities
        against their labels is applied to `proba` (labels unchanged). The parts are the
        source's sections when an obs column names two or more (`source_batch_key`, else the
        first of "library_id", "section", "sample", "batch" with two or more values), else 4
        contiguous spatial blocks of its spots when each holds at least 500 spots
        (`info["held_out"]` says which). Without
        coordinates (e.g. a single-cell atlas) the probabilities are the model's
        (`info["calibration"]` says why). "none":
        the model's probabilities. A number T > 0: that temperature. `info["temperature"]`
        holds the one used.
    progress_bar : bool, default False
        Show a tqdm progress bar over the K tried.
    devices : None, "all", sequence or jax.sharding.Mesh, default None
        None: JAX's default device. "all" (every device `jax.devices()` lists), a list of
        devices (or their indices) or a one-axis `jax.sharding.Mesh`: the target's spots are
        split across them and the global parameters replicated (`transst_bayes.shard`); the
        labels are those of the one-device fit. The source fit and the calibration fits stay on
        the default device. Not with transfer="cv".
    source_labels : array-like or None, default None
        One label per row when `source` is an array.
    spatial : array-like or None, default None
        (n, 2) spot coordinates when `target` is an array.
    **data_options
        How expression and space are read: the data options listed under Other Parameters.

    Other Parameters
    ----------------
    layer : str or None, default None
        Expression layer: `adata.layers[layer]` of the target (and of the source unless
        `source_layer` is given); None: `X`.
    source_layer : str or None, default None
        Layer of the source's expression; None: the same as `layer`.
    counts : bool or None, default None
        Whether the expression holds raw counts, which are normalised to `target_sum` per spot
        and log1p-transformed. None: detected (non-negative integers are counts); True: counts
        (ValueError when there are negative values); False: taken as already normalised.
    target_sum : float, default 1e4
        Library size that raw counts are normalised to.
    genes : str or sequence of str, default "auto"
        Gene selection among the genes that target and source share and that vary in the
        target and are non-zero in at least 1% (and 10) of the spots of each: "auto" (scanpy's
        boolean `var["highly_variable"]` of the target when it has that column, else
        "variance"), "highly_variable" (every such gene flagged there; `n_genes` does not
        apply), "variance" (the `n_genes` most variable genes of the log-normalised target),
        "cv" (by coefficient of variation, as the published code), "source" (how well a gene
        separates the source's classes: one-way ANOVA F; needs a labeled source), or a list of
        gene names taken as given.
    n_genes : int, default 2000
        Number of genes selected by "variance", "cv" or "source".
    standardize : str, default "pooled"
        Per-gene standardisation: "pooled" (mean and standard deviation of target and source
        together), "separate" (the target on its own; the source per section of
        `source_batch_key`) or "none". Standardised values are clipped to +-10.
    source_batch_key : str or None, default None
        Column of `source.obs` that names the source's sections: each is standardised on its
        own with standardize="separate", and held out in turn by `calibrate="auto"` and
        `transfer="auto"`. None: the first of "library_id", "section", "sample", "batch" with
        at least two values (none: spatial blocks of the source are held out instead).
    spatial_key : str, default "spatial"
        Key of the spot coordinates in `obsm`.
    graph : str, default "knn"
        Neighbour graph of the target spots: "knn" (`n_neighbors` nearest neighbours,
        symmetrised), "radius" (every spot within `radius`), "visium" (hexagonal lattice) or
        "st" (square lattice), the lattices from `obs["array_row"]` and `obs["array_col"]`.
        Not used when `obsp[graph_key]` holds a graph.
    graph_key : str, default "spatial_connectivities"
        Key in `obsp` of a precomputed spot adjacency (for example from
        `pp.spatial_neighbors`), used as given when present.
    n_neighbors : int, default 6
        Neighbours per spot of the "knn" graph.
    radius : float or None, default None
        Radius of the "radius" graph, in the units of the coordinates (required for it).
    library_key : str or None, default None
        Column of `target.obs` that names several sections in one AnnData: the graph has no
        edges between sections.
    prepare_on : str, default "auto"
        Where the target's expression is prepared: "host" (NumPy / SciPy), "device" (JAX on the
        fit's device, float32 only) or "auto" (the device when JAX's default backend is a GPU or
        TPU, the fit runs on one device, dtype is "float32" and the matrix fits in its memory).

    Returns
    -------
    TransSTResult
        The fit at the chosen K: `labels` (the domain of each spot, ICM under the Potts prior),
        `names` (domain names), `proba` (n, K) calibrated domain probabilities, `factors`
        (n, q), the target's and source's parameters (`W_t`, `mu`, `Sigma`, `tau`, `beta`,
        `kappa`, `W_s`, ...), `k_table` (one row per K: log-likelihood, criteria, beta, kappa,
        iterations, convergence, chosen), `settings` and `info` (temperature and calibration,
        transfer_choice, classes found, warnings, seconds per stage).

    Raises
    ------
    ValueError
        A bad option value (domains, transfer, variant, criterion, dtype, calibrate, a data
        option), K < 2 or more than half the spots, `n_factors` not smaller than the genes or
        spots kept, `label_key` missing from `source.obs`, a missing layer or coordinates, too
        few shared genes, non-finite expression, or `devices` with transfer="cv".
    TypeError
        An argument of the wrong type (for example `n_domains` not an int or a list of ints) or
        an unknown keyword argument.
    FloatingPointError
        Every restart for some K ended with a non-finite objective (try dtype="float64").

    See Also
    --------
    fit_svi : The same model fitted by SVI, with posterior draws.
    transst_bayes.tl.transst : Fit and write the domains into the AnnData.
    TransSTResult : The result and its methods.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> res = tb.fit_em(target, source, label_key="label", n_domains=[3, 4], n_factors=10)
    >>> res.labels.shape
    (400,)
    >>> table = res.k_table_frame()  # one row per K tried
    >>> res.to_anndata(target, key_added="transst")

    Arrays instead of AnnData:

    >>> res = tb.fit_em(target.X, source.X, spatial=target.obsm["spatial"],
    ...                 source_labels=source.obs["label"].to_numpy(), n_domains=4, n_factors=10)
    """
    t0 = time.perf_counter()
    em = settings_from(EMSettings, locals())
    em.check()
    mesh = spots_mesh(devices, em)
    job = setup(target, source, label_key, n_domains, n_novel, calibrate, em, source_labels, spatial,
                data_options, mesh, progress_bar)
    job, em, held = choose_transfer(job, label_key, em)
    with V.recorded_warnings(job.notes), precision(dtype):
        out = fit_arrays(job.prep, job.request, em, job.mode, progress_bar, mesh)
        ta = time.perf_counter()
        res = _assemble(job.prep, out, em, job.ds, job.mode)
        res.info["timings"]["assemble"] = time.perf_counter() - ta
    return finish(res, job, calibrate, label_key, em, t0, held=held)


def choose_transfer(job: FitJob, label_key: str, em: EMSettings) -> tuple:
    """transfer="auto": the mode ("eb" or "none") whose fits of the held-out source sections
    (`held_out`) recover their annotation better (mean ARI; "eb" on ties), as (job, em, held
    fits of that mode for `finish` to calibrate on, or None). The choice is in the returned
    job's `choice` and, when it sets the source aside, a warning in its `notes`."""
    if em.transfer != "auto":
        return job, em, None
    em = replace(em, transfer="eb")
    if job.mode == "none":  # no labeled source: nothing to choose
        return job, em, None
    t0 = time.perf_counter()
    held = {}
    for mode in ("eb", "none"):
        held[mode], how = held_out(job.source, label_key, replace(em, transfer=mode), job.ds,
                                   f"held-out fits, transfer={mode}" if job.progress else None)
        if held[mode] is None:  # no coordinates, or every fit of this mode collapsed
            job = job._replace(seconds={"held_out": time.perf_counter() - t0})
            return job._replace(choice=dict(chosen="eb", why=f"transfer='auto' kept 'eb': {how}")), em, held["eb"]
    ari = {m: float(np.mean([0.0 if names is None else  # a collapsed fit found nothing
                             adjusted_rand_index(np.asarray(names)[np.argmax(P, axis=1)], truth)
                             for names, P, truth in held[m]])) for m in held}
    failed = {m: sum(names is None for names, _, _ in held[m]) for m in held}
    # the target alone only where it did better and never collapsed on a held-out section
    chosen = "none" if ari["none"] > ari["eb"] and not failed["none"] else "eb"
    choice = dict(chosen=chosen, held_out_ari=ari, n_sections=len(held["eb"]), collapsed=failed, held_out=how)
    if chosen == "none":
        with V.recorded_warnings(job.notes):
            warnings.warn(
                f"the source's classes did not carry over to its own held-out parts ({how}; mean ARI "
                f"{ari['eb']:.3f} with the source, {ari['none']:.3f} without it), so the target's domains "
                "were found without the source (transfer='none'; domains are not named after source "
                "classes); pass transfer='eb' to use the source anyway", UserWarning, stacklevel=3)
    job = in_mode(job, chosen)._replace(choice=choice, seconds={"held_out": time.perf_counter() - t0})
    return job, replace(em, transfer=chosen), held[chosen]


def finish(res: TransSTResult, job: FitJob, calibrate, label_key: str, em: EMSettings, t0: float,
           draws=None, held=None) -> TransSTResult:
    """What both fits do after fitting: warn of empty domains and of anchoring too weak to trust
    the domain names (kappa >= plan.KAPPA_WEAK), keep the warnings in
    `info["warnings"]`, temper the probabilities by the calibration temperature (with posterior
    `draws`, (S, n, K) domain log-probabilities, each draw before they are averaged; labels stay
    as they are) and record the seconds: `info["timings"]` per stage in the order they ran
    (prepare, graph, held_out: the fits of transfer="auto", source, transfer, cluster, svi,
    assemble, calibration; each stage's first call includes its compilation) and the total,
    also in `info["seconds"]`."""
    with V.recorded_warnings(job.notes):
        V.empty_domains(res.labels, res.names)
        V.weak_anchoring(res.kappa, D.KAPPA_WEAK)
    res.info["warnings"] = job.notes
    tc = time.perf_counter()
    cl = res.info.get("classifier") or {}
    if cl.get("agreement") is not None and not cl.get("used"):
        # the target's fit stayed generative: so must the fits its temperature is learned on
        # (a held-out section may use the classifier's term where the target does not: seqFISH)
        em, held = replace(em, classifier=0.0), None
    T, res.info["calibration"], res.info["calibration_ece"], scheme = temperature(
        calibrate, job.source, label_key, em, job.ds, held, job.progress)
    if scheme is not None:
        res.info["held_out"] = scheme
    if job.choice:
        res.info["transfer_choice"] = dict(job.choice)
    if draws is None:
        res.proba = C.temper(res.proba, T)
    else:
        dlp = np.asarray(draws, np.float64)
        res.proba = C.temper(np.exp(dlp - np.logaddexp.reduce(dlp, axis=-1, keepdims=True)), T).mean(axis=0)
    res.info["temperature"] = T
    t = dict(res.info.get("timings", {}))
    first = {k: t.pop(k) for k in ("prepare", "graph") if k in t}  # the stages in the order they ran
    res.info["timings"] = timings = {**first, **(job.seconds or {}), **t}
    timings["calibration"] = time.perf_counter() - tc
    res.info["seconds"] = timings["total"] = time.perf_counter() - t0
    return res


def temperature(calibrate, source, label_key: str, em: EMSettings, ds: DataSettings, held=None,
                progress: bool = False) -> tuple:
    """The temperature of the per-spot probabilities, how it was found, the held-out fits'
    pooled ECE at T = 1 and at the chosen T (None when no held-out fits were made) and the
    held-out scheme (`C.held_out_groups`; None without held-out fits). `held`: the held-out
    fits already made (by `choose_transfer`), else they are made here."""
    if not isinstance(calibrate, str):
        return float(calibrate), "fixed temperature", None, None
    if calibrate == "none":
        return 1.0, "none (calibrate='none')", None, None
    if source is None:
        return 1.0, "none: no labeled source to calibrate on", None, None
    groups, scheme = C.held_out_groups(source, C.section_key(source, ds.source_batch_key), ds.spatial_key)
    if groups is None:
        return 1.0, f"none: {scheme}", None, None
    if held is None:
        held, why = held_out(source, label_key, em, ds, "held-out fits, calibration" if progress else None)
        if held is None:
            return 1.0, f"none: {why}", None, None
    T, e = C.choose_temperature(held)
    n_fits = sum(names is not None for names, _, _ in held)
    key = C.section_key(source, ds.source_batch_key)
    what = (f"source sections ({key}: {n_fits} fits" if scheme.startswith("source sections")
            else f"spatial blocks ({n_fits} fits")
    return T, (f"held-out {what}; their ECE {e[0]:.3f} at T = 1, {float(e.min()):.3f} at T = {T:.2f})"), \
        [float(e[0]), float(e.min())], scheme


def held_out(source, label_key: str, em: EMSettings, ds: DataSettings, progress: str | None = None) -> tuple:
    """Each section of the source (or, when its sections are not named, each spatial block of
    its spots: `C.held_out_groups`) fitted as a target from the others, with the fit's settings
    (`calibrate="none"`): ([(names, proba, labels)], the scheme in words), or (None, why not)
    when the source has no coordinates or no group could be fitted on its own."""
    groups, scheme = C.held_out_groups(source, C.section_key(source, ds.source_batch_key), ds.spatial_key)
    if groups is None:
        return None, scheme
    inner = replace(ds, layer=ds.source_layer or ds.layer, library_key=None,
                    graph_key=DataSettings.graph_key)
    opts = {k: v for k, v in asdict(inner).items() if k != "dtype"}

    def fit(tgt, src, lk, K):
        with warnings.catch_warnings():  # a held-out source section's warnings are not the target's
            warnings.simplefilter("ignore", UserWarning)
            return fit_em(tgt, src, lk, n_domains=K, domains=em.domains, n_factors=em.n_factors,
                          transfer=em.transfer, variant=em.variant, beta=em.beta, n_restarts=em.n_restarts,
                          max_iter=em.max_iter, tol=em.tol, seed=em.seed, dtype=em.dtype, weight=em.weight,
                          classifier=em.classifier, calibrate="none", **opts)

    held = C.held_out_fits(source, label_key, groups, ds.spatial_key, fit, progress)
    if not any(names is not None for names, _, _ in held):
        return None, f"no group of the {scheme} could be fitted on its own"
    return held, scheme


def spots_mesh(devices, em: EMSettings):
    """The mesh the target's spots are split over (None: one device), checked against the
    settings before any work."""
    mesh = shard.mesh(devices)
    if mesh is not None and em.transfer == "cv":
        raise ValueError("devices: transfer='cv' (the published code's cross-validated lambda) runs on "
                         "one device; use transfer='auto' (the default) or 'eb', or devices=None")
    return mesh


def fit_arrays(prep: Prepared, request: tuple, em: EMSettings, mode: str,
               progress_bar: bool = False, mesh=None) -> dict:
    """Source, transfer, then one clustering fit per K. `request` = (n_domains, n_novel);
    `mesh` (shard.mesh) splits the target's spots over devices. Per-spot outputs hold the real
    spots only."""
    dt = jnp.dtype(em.dtype)
    key = jax.random.PRNGKey(em.seed)
    k_src, k_tr, k_cl = jax.random.split(key, 3)
    lay = shard.layout(prep.X.shape[0], mesh)
    X = shard.rows(prep.X, lay, dt)
    w = shard.weights(lay, dt)
    q = em.n_factors
    timings = {}
    t = time.perf_counter()
    src = None
    if mode != "none":
        C = len(prep.source_classes)
        src = _fit_source(jnp.asarray(prep.X_source, dt), jnp.asarray(prep.source_labels), C=C,
                          q=q, key=k_src, max_iter=em.source_max_iter)
        W_prior = src.W
    else:
        W_prior = jnp.zeros((prep.X.shape[1], q), dt)
    jax.block_until_ready(src)
    support = float("nan") if src is None else float(_source_support(prep.X, src.W))
    warn_unsupported(support)
    timings["source"], t = time.perf_counter() - t, time.perf_counter()
    tr = jax.block_until_ready(_fit_transfer(X, W_prior if mode != "none" else None, k_tr, mode=mode,
                                             q=q, max_iter=em.transfer_max_iter, w=w))
    Z_real = shard.real(tr.Z, lay)
    timings["transfer"], t = time.perf_counter() - t, time.perf_counter()
    anchored = src is not None and em.domains == "anchored"
    src_ll = present = None
    if src is not None:
        src_ll = shard.real(_class_loglik(X, tr.W, tr.psi, src.mu, src.Sigma), lay)
        present = D.present_classes(D.class_counts(np.asarray(src_ll)))
    n_domains, n_novel = request
    Ks = check_k(D.resolve_k(n_domains, n_novel, None if present is None else len(present),
                              anchored, DEFAULT_K_NO_SOURCE), lay.n)
    g = prep.graph
    graph = shard.graph(g, lay, dt)
    variant = resolve_variant(em, mode)
    data = tr.Z if variant == "two_stage" else X
    anchors = D.class_anchors(src, tr, variant)
    beta0 = em.beta if em.beta is not None else em.beta_init
    class_logp = None
    # the classifier's term joins the two-stage fit of anchored domains (the default with a
    # labeled source); the joint variant re-fits the loadings and stays generative
    hybrid = anchored and em.classifier > 0 and variant == "two_stage"
    if hybrid:
        Vs = _source_scores(jnp.asarray(prep.X_source, dt), src.W, src.psi)
        reg = _fit_classifier(Vs, jnp.asarray(prep.source_labels), C=len(prep.source_classes))
        class_logp = CL.log_probs(reg, tr.Z)
    fits, plans, gammas, terms, gen_ll = {}, {}, {}, {}, {}
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(Ks), desc="fit_em", unit="K")
    for K in Ks:
        if bar is not None:
            bar.set_postfix(K=K)
        plan = D.plan_domains(K, present, prep.source_classes, anchored)
        dprior = D.domain_prior(plan, *anchors, q, dt)
        s = Settings(K=K, variant=variant, mode=mode, learn_beta=em.beta is None,
                     max_iter=em.max_iter, tol=em.tol, n_colors=g.n_colors,
                     n_mean_field=em.n_mean_field, weight=em.expression_weight(False),
                     learn_kappa=bool(plan.classes))
        k_K = jax.random.fold_in(k_cl, K)
        n_restarts = em.n_restarts
        if plan.classes:
            inits = D.initial_labels(k_K, Z_real, src_ll, plan, n_restarts, _kmeans, dprior)
        else:
            seed_from = src_ll is not None and src_ll.shape[1] >= K
            inits = _free_inits(k_K, Z_real, src_ll if seed_from else None, K, n_restarts)
        inits = shard.rows(inits.T, lay, np.int32).T  # the real spots' starts, padded
        cdata = ClusterData(data, graph, W_prior, tr.lam, dprior, w)
        best = _fit_k(cdata, tr, inits, jnp.asarray(beta0, dt), jnp.asarray(KAPPA2_INIT, dt), s=s,
                      wait=shard.waiter(lay))
        gammas[K], terms[K], gen_ll[K] = None, (s.weight, None), em_loglik(best)
        if hybrid and plan.classes and plan.n_novel == 0:
            # the hybrid fit: where the source classifier agrees with the generative fit's
            # domains (its classes carry over), EM goes on from that fit with the classifier's
            # term; the classes that fit left (nearly) empty stay out
            counts = np.bincount(np.asarray(shard.real(best.labels, lay)), minlength=K)
            found = counts >= max(D.MIN_CLASS_SPOTS, D.MIN_FOUND_SHARE * lay.n)
            F1 = CL.domain_term(class_logp, plan.classes, K, jnp.asarray(1.0, dt))
            gamma = float(_agreement(best.state.R, F1, w))
            F1 = jnp.where(jnp.asarray(found)[None, :], F1, CL.LOG_EXCLUDED)
            gammas[K] = gamma
            if gamma >= CL.AGREEMENT_MIN:
                # kappa stays the generative fit's (empirical Bayes on the expression; the
                # classifier's term is no likelihood of it)
                sh = s._replace(weight=em.expression_weight(True), learn_kappa=False)
                best = _run(cdata._replace(classifier=em.classifier * F1), best.state, s=sh, limit=s.max_iter)
                terms[K] = (sh.weight, shard.real(em.classifier * F1, lay))
        if not bool(jnp.isfinite(best.objective)):
            raise FloatingPointError(
                f"every restart for K={K} ended with a non-finite objective; try dtype='float64'"
            )
        fits[K], plans[K] = _real_spots(best, lay), plan
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    timings["cluster"] = time.perf_counter() - t
    return {"timings": timings, "source": src, "transfer": tr._replace(Z=Z_real), "n_devices": lay.n_devices,
            "fits": fits, "plans": plans, "Ks": Ks, "variant": variant, "anchors": anchors,
            "agreement": gammas, "data_terms": terms, "generative_loglik": gen_ll, "source_support": support,
            "class_post": None if src_ll is None else D.class_posterior(src_ll),
            "present": [] if present is None else [prep.source_classes[c] for c in present]}


_source_support = jax.jit(source_support)
# the compiled programs of the three steps (jit here only: the kernels stay plain functions)
_fit_source = jax.jit(fit_source, static_argnames=("C", "q", "max_iter", "tol"))
_fit_transfer = jax.jit(fit_transfer, static_argnames=("mode", "max_iter", "tol", "q"))
_class_loglik = jax.jit(D.class_loglik)
_kmeans = jax.jit(kmeans, static_argnames=("K", "n_iter"))
_source_scores = jax.jit(scores)
_fit_classifier = jax.jit(CL.fit_map, static_argnames=("C", "n_steps"))
_agreement = jax.jit(CL.agreement_weight, static_argnames=("n_steps",))


@partial(jax.jit, static_argnames=("K", "n_restarts"))
def _free_inits(key, Z, src_ll, K: int, n_restarts: int):
    """Starting labels of a free fit: k-means++ on the transferred factor scores; restart 0 from
    the source classes when there are at least K: each spot to its best class among the K
    classes that take the most spots."""
    inits = jax.vmap(lambda k: kmeans(k, Z, K))(jax.random.split(key, n_restarts))
    if src_ll is not None:
        taken = jnp.sum(jax.nn.one_hot(jnp.argmax(src_ll, axis=1), src_ll.shape[1]), axis=0)
        top = jnp.argsort(-taken)[:K]
        inits = inits.at[0].set(jnp.argmax(src_ll[:, top], axis=1).astype(inits.dtype))
    return inits


_init = jax.jit(init, static_argnames=("K",))
# the Potts EM for at most `limit` iterations: one compiled program for the short restarts and
# for the continued run
_run = jax.jit(fit_cluster, static_argnames=("s",))


def _fit_k(data: ClusterData, tr, inits, beta0, kappa2_0, s: Settings, wait=lambda x: x):
    """All restarts for one K ("small EM", Biernacki et al. 2003): every restart (a row of
    `inits`) runs SHORT_EM_ITER iterations, the best finite objective runs on to convergence.
    The restarts and the continued run are one compiled program, called once each; `wait`
    (shard.waiter) is applied to each restart's result."""
    short = min(SHORT_EM_ITER, s.max_iter)
    fits = [wait(_run(data, _init(tr.Z, inits[r], tr.W, tr.psi, tr.tau2, beta0, s.K, kappa2_0, data.w),
                      s=s, limit=short))
            for r in range(inits.shape[0])]
    obj = np.array([float(f.objective) for f in fits])
    best = fits[int(np.argmax(np.where(np.isfinite(obj), obj, -np.inf)))]
    if s.max_iter <= SHORT_EM_ITER:
        return best
    return _run(data, best.state, s=s, limit=s.max_iter)


# the chosen fit is reported unconverged (a warning) when its objective still changed by more than
# this many times `tol` per spot in its last iteration; below it, k_table's "converged" says so
# alone: joint fits on 2,000 genes creep by ~1e-3 nats per spot per iteration for hundreds of
# iterations with their labels fixed (HER2ST H1: labels at 100 and at 117 iterations, ARI 0.99)
FAR_FROM_CONVERGED = 100


def _last_change(f, n: int) -> float:
    """|change| of the objective per spot in the fit's last recorded iteration (inf with fewer
    than two)."""
    tr = np.asarray(f.trace.objective, np.float64)[: int(f.n_iter)]
    return float(abs(tr[-1] - tr[-2]) / n) if tr.size >= 2 else float("inf")


def _real_spots(f, lay: shard.Layout):
    """A fit's per-spot fields without the padded rows."""
    return f._replace(state=f.state._replace(R=shard.real(f.state.R, lay)), labels=shard.real(f.labels, lay),
                      Z=shard.real(f.Z, lay), loglik=shard.real(f.loglik, lay))


def _parameter_trace(f, mode: str, anchored: bool) -> dict:
    """beta, tau and kappa entering each iteration of the chosen fit's final run (the
    objective's trace is `res.trace`); tau only where the fit learns it ("eb" mode), kappa
    only for anchored domains."""
    n = int(f.n_iter)
    out = {"beta": np.asarray(f.trace.beta[:n], np.float64).tolist()}
    if mode == "eb":
        out["tau"] = np.sqrt(np.asarray(f.trace.tau2[:n], np.float64)).tolist()
    if anchored:
        out["kappa"] = np.sqrt(np.asarray(f.trace.kappa2[:n], np.float64)).tolist()
    return out


def em_loglik(fit) -> float:
    """(Pseudo-marginal) log-likelihood of the target under an EM fit: its objective less the
    log-prior of the parameters."""
    return float(fit.objective) - float(fit.log_prior)


def _classes_found(prep: Prepared, plan: D.DomainPlan, labels: np.ndarray, has_source: bool) -> dict:
    """The source classes the fit found in the target (an anchored domain holding a spot) and
    those it did not; empty lists without a source."""
    if not has_source:
        return {"classes_found": [], "classes_absent": []}
    counts = np.bincount(labels, minlength=len(plan.names))
    names = [plan.names[k] for k in range(len(plan.classes)) if counts[k] > 0]
    return {"classes_found": names, "classes_absent": [c for c in prep.source_classes if c not in names]}


# info keys one path has and the other has not: EM's per-iteration parameter trace; SVI's rounds
PATH_INFO = {"em": ("trace",), "svi": ("svi_rounds", "svi_converged")}


def shared_info(prep: Prepared, out: dict, K: int, em: EMSettings, plan: D.DomainPlan,
                labels: np.ndarray) -> dict:
    """The `res.info` keys both paths give, from the EM fits they share (`fit_arrays`) and the
    chosen K's named plan and labels."""
    src, tr = out["source"], out["transfer"]
    return {"classifier": classifier_info(out, K, em), "source_support": out["source_support"],
            "cv_lambda": float(tr.cv_lambda), "source_n_iter": None if src is None else int(src.n_iter),
            "transfer_n_iter": int(tr.n_iter), "n_colors": int(prep.graph.n_colors),
            "n_devices": out["n_devices"], "domains_renamed": D.renamed(out["plans"][K], plan),
            "classes_present": list(out["present"]),
            "timings": dict(prep.timings, **out["timings"]),
            **_classes_found(prep, plan, np.asarray(labels), src is not None)}


def classifier_info(out: dict, K: int, em: EMSettings) -> dict:
    """What `res.info["classifier"]` says of the chosen fit's data term: whether the source
    classifier's term was used, the agreement that decided it (None: not computed: no anchored
    two-stage fit or classifier=0), and the power on the expression likelihood."""
    weight, term = out["data_terms"][K]
    gamma = out["agreement"][K]
    return {"used": term is not None, "agreement": gamma, "agreement_min": CL.AGREEMENT_MIN,
            "weight": float(weight), "classifier_weight": float(em.classifier)}


def _assemble(prep: Prepared, out: dict, em: EMSettings, ds: DataSettings, mode: str) -> TransSTResult:
    n, p = prep.X.shape
    q = em.n_factors
    Ks = out["Ks"]
    table = []
    for K in Ks:
        f, plan = out["fits"][K], out["plans"][K]
        R = np.asarray(f.state.R, np.float64)
        # K is chosen on the generative fit's likelihood (the classifier's term is no
        # likelihood of the target's expression)
        ll = out["generative_loglik"][K]
        row = {"K": K, "n_novel": plan.n_novel if plan.classes else None, "loglik": ll}
        row.update(criteria(ll, K, q, n, float(entropy(R).sum()), anchored=bool(plan.classes),
                            n_anchored=len(plan.classes)))
        row.update({"beta": float(f.state.beta), "kappa": float(np.sqrt(f.state.kappa2)) if plan.classes else None,
                    "n_iter": int(f.n_iter), "converged": bool(f.converged)})
        table.append(k_table_row(row))
    chosen = mark_chosen(table, min(table, key=lambda r: r[em.criterion])["K"])
    f = out["fits"][chosen]
    step = _last_change(f, n)
    if not bool(f.converged) and step > FAR_FROM_CONVERGED * em.tol:
        V.unconverged("EM fit", chosen, int(f.n_iter), f"{step:.2g} nats per spot in its last iteration (the "
                      f"stopping rule: {em.tol:g}); raise max_iter (now {em.max_iter})")
    plan = D.named_after_fit(out["plans"][chosen], np.asarray(f.state.R), out["class_post"], prep.source_classes)
    src, tr = out["source"], out["transfer"]
    tau = float(np.sqrt(f.state.tau2)) if mode == "eb" else float(np.sqrt(tr.tau2)) if mode == "cv" else float("inf")
    settings = settings_record(asdict(em), ds, mode, out["variant"], Ks,
                               domains_used="anchored" if plan.classes else "free")
    trace = np.asarray(f.trace.objective)
    two_stage = out["variant"] == "two_stage"  # the loadings are the transfer step's
    return TransSTResult(
        spots=SpotOutputs(labels=np.asarray(f.labels, np.int64), proba=np.asarray(f.state.R, np.float64),
                          factors=np.asarray(f.Z)),
        target=TargetParams(W=np.asarray(tr.W if two_stage else f.state.W),
                            psi=np.asarray(tr.psi if two_stage else f.state.psi),
                            mu=np.asarray(f.state.mu), Sigma=np.asarray(f.state.Sigma), tau=tau,
                            beta=float(f.state.beta),
                            kappa=float(np.sqrt(f.state.kappa2)) if plan.classes else None,
                            domain_names=list(plan.names)),
        source=source_fit(prep, src),
        data=data_used(prep),
        diagnostics=Diagnostics(
            trace=trace[np.isfinite(trace)], k_table=table, settings=settings,
            info={**shared_info(prep, out, chosen, em, plan, np.asarray(f.labels)),
                  "trace": _parameter_trace(f, mode, bool(plan.classes))}),
    )
