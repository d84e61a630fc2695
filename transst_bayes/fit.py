"""The two public fits, one pipeline: set-up and every check (`job.setup`) -> the source's
held-out fits where the defaults need them (`heldout.choose_transfer`) -> the path (EM:
`em.driver`; SVI: the EM run as warm start, then `svi.runner`) -> what every fit does after
fitting (`finish`: warnings, calibration, timings)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from . import calibration as C
from . import heldout as H
from . import lapack_guard
from . import plan as D
from . import shard
from . import validate as V
from . import variants as VR
from .em.driver import assemble, fit_arrays
from .job import FitJob, precision, settings_from, setup
from .result import TransSTResult
from .selection import CRITERIA, DEFAULT_CRITERION
from .settings import DEFAULT_N_NOVEL, EMSettings, MCMCSettings, SVISettings, resolve_variant
from .svi.mcmc import RHAT_OK, run_mcmc
from .svi.runner import run_svi


@lapack_guard.guard
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
        part by part (as for `calibrate`: its sections, else folds of spatial tiles) and
        each part fitted from the others both with the source ("eb") and without it ("none"),
        and the target is fitted the way that found the held-out parts' annotated domains
        better (higher mean ARI; "none" only when ahead by more than 0.02, "eb" when the source
        has no coordinates);
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
        Random seed of the clustering's random starts (k-means++ restarts of free and novel
        domains). Anchored domains without novel ones start from the source's classification,
        and the factor models' randomised PCA from one fixed key: such a fit gives the same
        answer for every seed.
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
        first of "library_id", "section", "sample", "batch" with two or more values), else, for
        a source of at least 1,000 spots, 4 folds of an 8 x 8 grid of spatial tiles, each
        fold's spots fitted inside the whole source with their labels withheld
        (`info["held_out"]` says which). Without
        coordinates (e.g. a single-cell atlas) the probabilities are the model's
        (`info["calibration"]` says why). "none":
        the model's probabilities. A number T > 0: that temperature. `info["temperature"]`
        holds the one used. The held-out fits (these and `transfer="auto"`'s) read only the
        source and the settings: a later call in the same process with the same source and
        settings reuses them (the last 4 such pairs are kept; `info["calibration"]` says so).
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
        at least two values (none: folds of spatial tiles of the source are held out instead).
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
    return _em_pipeline(em, target, source, label_key, (n_domains, n_novel), calibrate, progress_bar,
                        spots_mesh(devices, em), source_labels, spatial, data_options, t0)


def _em_pipeline(em: EMSettings, target, source, label_key, request: tuple, calibrate, progress_bar, mesh,
                 source_labels, spatial, data_options: dict, t0: float) -> TransSTResult:
    """fit_em once its settings are built and checked: set-up, the transfer choice, the EM
    run, the result, then `finish` (calibration, warnings, timings)."""
    job = setup(target, source, label_key, *request, calibrate, em, source_labels, spatial,
                data_options, mesh, progress_bar)
    job, em, held = H.choose_transfer(job, label_key, em, held_out_fit)
    with V.recorded_warnings(job.notes), precision(em.dtype):
        out = fit_arrays(job.prep, job.request, em, job.mode, progress_bar, mesh)
        ta = time.perf_counter()
        res = assemble(job.prep, out, em, job.ds, job.mode)
        res.info["timings"]["assemble"] = time.perf_counter() - ta
    return finish(res, job, calibrate, label_key, em, t0, held=held)


def held_out_fit(em: EMSettings, target, source, label_key: str, n_domains: int, data_options: dict) -> TransSTResult:
    """One of the source's held-out fits (`heldout.held_out`): fit_em's pipeline with the
    settings `em` as they are (its transfer mode and padding included), on one device, without
    calibration or progress bar."""
    return _em_pipeline(em, target, source, label_key, (n_domains, DEFAULT_N_NOVEL), "none", False, None,
                        None, None, data_options, time.perf_counter())


@lapack_guard.guard
def fit_svi(
    target,
    source=None,
    label_key: str = "label",
    n_domains: int | Sequence[int] | None = None,
    *,
    domains: str = "anchored",
    n_novel: int | Sequence[int] = DEFAULT_N_NOVEL,
    model: Callable | None = None,
    guide: str = "normal",
    form: str | None = None,
    model_options: dict | None = None,
    n_factors: int = 15,
    criterion: str = "loo",
    lr: float = 0.01,
    steps_per_round: int = 200,
    max_rounds: int = 30,
    rtol: float = 1e-4,
    batch_size: int | None = None,
    num_samples: int = 100,
    rank: int = 10,
    progress_bar: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    calibrate: str | float = "auto",
    em_options: dict | None = None,
    devices=None,
    source_labels=None,
    spatial=None,
    **data_options,
) -> TransSTResult:
    """Fit a TransST model from `transst_bayes.models` (or your own in the same style) by SVI.

    Variational EM started from the EM/ICM solution of `fit_em`: Adam steps on the global
    parameters with each spot's domain label summed out under the mean-field Potts field,
    alternating with refreshes of that field, until the loss of a round changes by less than
    `rtol`. Posterior draws from the guide give the domain probabilities (averaged over draws),
    the per-spot log-likelihood (for WAIC / PSIS-LOO) and the draws of the global parameters.

    Parameters
    ----------
    target : AnnData or array
        The unlabeled section(s), as in `fit_em`.
    source : AnnData, array or None, default None
        Labeled data with the classes in `obs[label_key]`, as in `fit_em`; None fits the target
        alone.
    label_key : str, default "label"
        Column of `source.obs` holding the source's classes.
    n_domains : int, sequence of int or None, default None
        K or a list of K (None: as in `fit_em`); with several, K is chosen by `criterion`.
    domains : str, default "anchored"
        As in `fit_em`: "anchored" (domains named after source classes, with a labeled source;
        the model option `kappa=` fixes kappa instead of its half-Cauchy hyperprior) or "free".
    n_novel : int or sequence of int, default (0, 1, 2)
        Number(s) of novel domains tried when `n_domains` is None, as in `fit_em`.
    model : callable or None, default None
        `model(data: SpotData, K, n_factors, batch_size=None, **model_options)`. None:
        `models.scores_model` for anchored domains (the two-stage variant, as `fit_em`: data.X
        holds the transferred factor scores, the loadings stay at the transfer step's),
        `models.transst_model` for free domains with a source, `models.fixed_loadings_model`
        without one (the loadings and noise at the EM fit's, the posterior over the domains and
        beta; a mean-field guide over free loadings, `models.no_transfer_model`, drifts along
        their GL(q) ridge to one domain). With `variant="two_stage"` in `em_options` a model's
        data.X is the factor scores; a model passed here otherwise sees the expression (the EM
        warm start then uses the joint variant).
    guide : str, default "normal"
        "delta" (MAP; reproduces `fit_em`), "normal" (AutoNormal) or "lowrank"
        (AutoLowRankMultivariateNormal with a covariance factor of rank `rank`).
    form : str or None, default None
        The transfer prior on the loadings: "ridge", "global" or "horseshoe". Given, the
        loadings are fitted with the domains (`models.transst_model`, the joint variant),
        whatever the domain mode. None: "global" where that model is the default.
    model_options : dict or None, default None
        Keyword arguments passed to the model (for example `kappa=` or `form=`).
    n_factors : int, default 15
        Number of latent factors q.
    criterion : str, default "loo"
        How K is chosen among several: "loo" or "waic" (ArviZ, from the per-spot
        log-likelihood over posterior draws; "hbic" when they are not finite) or "sbic",
        "bic", "mbic", "hbic", "icl" (from the EM warm start).
    lr : float, default 0.01
        Learning rate of the Adam optimiser.
    steps_per_round : int, default 200
        SVI steps between two refreshes of the Potts field (one compiled call per round).
    max_rounds : int, default 30
        Largest number of rounds per K.
    rtol : float, default 1e-4
        Stop when the mean loss of a round changes by less than `rtol` (relative) from the
        previous round's.
    batch_size : int or None, default None
        Spots per SVI step (minibatches, for large data; models with only global latent
        sites); the posterior is then read from the guide's parameters averaged over the last
        round's steps, which removes the minibatch jitter of the last iterate. None: every spot
        in each step.
    num_samples : int, default 100
        Posterior draws (one with guide="delta").
    rank : int, default 10
        Rank of the "lowrank" guide's covariance factor (NumPyro's default, the square root of
        the ~p q latent dimensions, costs ~40x more per step on 2,000 genes).
    progress_bar : bool, default False
        Show tqdm progress bars: the held-out fits, the EM warm start's K, each K's SVI rounds
        and its posterior draws.
    seed : int, default 0
        Random seed (EM warm start, SVI and posterior draws).
    dtype : str, default "float32"
        "float32" or "float64".
    calibrate : str or float, default "auto"
        As in `fit_em` ("auto": a temperature from EM fits of held-out source sections, applied
        to every posterior draw's domain probabilities before they are averaged; "none"; or a
        temperature T > 0).
    em_options : dict or None, default None
        Settings of the EM warm start: any field of `EMSettings` except `n_factors`, `seed`,
        `dtype` and `domains` (which are this function's), for example `transfer`, `variant`,
        `beta`, `n_restarts`, `max_iter`, `tol`, `weight`.
    devices : None, "all", sequence or jax.sharding.Mesh, default None
        As in `fit_em`: the EM warm start and the SVI steps split the target's spots over these
        devices; padded spots (`data.w` == 0) are masked out by `models.spot_plate`, which a
        model of your own must use for its per-spot sites.
    source_labels : array-like or None, default None
        One label per row when `source` is an array.
    spatial : array-like or None, default None
        (n, 2) spot coordinates when `target` is an array.
    **data_options
        How expression and space are read: the data options listed under Other Parameters (the
        same as `fit_em`'s).

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
        at least two values (none: folds of spatial tiles of the source are held out instead).
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
        The fit at the chosen K, with posterior draws of the global sites in `.posterior`
        (name -> (S, ...)), the per-spot log-likelihood per draw in `.spot_loglik` (S, n),
        domain probabilities averaged over the draws in `.proba`, labels by ICM at the guide's
        point estimate, posterior means in `W_t`, `mu`, `Sigma`, `beta`, ... (the EM fit's
        values for sites the model does not sample), and a `k_table` with WAIC, PSIS-LOO
        (elpd, p, largest Pareto k), ELBO and the BIC-type criteria of the warm start.

    Raises
    ------
    ValueError
        A bad option value (guide, criterion, form, lr, ...), `batch_size` larger than the
        number of target spots, or any input error of `fit_em`.
    TypeError
        An argument of the wrong type or an unknown keyword argument.
    FloatingPointError
        The SVI loss became non-finite (lower `lr`).

    See Also
    --------
    fit_em : The EM/ICM fit that starts SVI.
    transst_bayes.tl.transst : Fit (method="svi") and write the domains into the AnnData.
    marker_genes, transfer_breaking_genes, to_inference_data : Posterior summaries.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> res = tb.fit_svi(target, source, label_key="label", n_domains=4, n_factors=10,
    ...                  num_samples=20)
    >>> res.spot_loglik.shape
    (20, 400)
    >>> markers = tb.marker_genes(res, n_top=5)  # credible intervals over the posterior draws
    """
    from . import models as M

    t0 = time.perf_counter()
    st = settings_from(SVISettings, locals())
    st.check()
    if form is not None and form not in M.FORMS:
        raise ValueError(f"form must be one of {M.FORMS}, got {form!r}")
    em = warm_start_settings(criterion, n_factors, seed, dtype, domains, em_options)
    mesh = spots_mesh(devices, em)
    job = setup(target, source, label_key, n_domains, n_novel, calibrate, em, source_labels, spatial,
                data_options, mesh, progress_bar)
    job, em, held = H.choose_transfer(job, label_key, em, held_out_fit)
    prep, mode = job.prep, job.mode
    n = prep.X.shape[0]
    if batch_size is not None and batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} target spots; lower it or pass None")
    model, em, opts = numpyro_model(model, form, model_options, em, mode)
    with V.recorded_warnings(job.notes), precision(dtype):
        out = fit_arrays(prep, job.request, em, mode, mesh=mesh)
        res, draws = run_svi(prep, out, model, opts, st, em, job.ds, mode, criterion, progress_bar, mesh)
    # the temperature is found by EM fits of held-out source sections (calibration.py) and
    # tempers each posterior draw's probabilities before they are averaged; labels stay the
    # argmax of the model's average
    return finish(res, job, calibrate, label_key, em, t0, draws=draws, held=held)


@lapack_guard.guard
def fit_mcmc(
    target,
    source=None,
    label_key: str = "label",
    n_domains: int | Sequence[int] | None = None,
    *,
    domains: str = "anchored",
    n_novel: int | Sequence[int] = DEFAULT_N_NOVEL,
    model: Callable | None = None,
    model_options: dict | None = None,
    n_factors: int = 15,
    criterion: str = "loo",
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    chain_method: str = "vectorized",
    target_accept: float = 0.8,
    max_tree_depth: int = 8,
    init_jitter: float = 0.1,
    progress_bar: bool = False,
    seed: int = 0,
    dtype: str = "float64",
    calibrate: str | float = "auto",
    em_options: dict | None = None,
    source_labels=None,
    spatial=None,
    **data_options,
) -> TransSTResult:
    """Sample a TransST model from `transst_bayes.models` by NUTS: the gold standard that EM
    and SVI can be checked against, for small data (a section of up to a few thousand spots).

    The same model, warm start and read-out as `fit_svi` (the EM/ICM solution of `fit_em`,
    each spot's domain summed out under the mean-field Potts field of the EM fit's
    responsibilities, which stays fixed), with the guide replaced by NUTS over every continuous
    site of the model, in several chains started from the EM fit with a little noise.
    Convergence is reported per site (split R-hat, bulk ESS, divergent transitions) in
    `info["mcmc"]`; a warning names the sites whose R-hat exceeds 1.01.

    Parameters
    ----------
    target : AnnData or array
        The unlabeled section, as in `fit_em`.
    source : AnnData, array or None, default None
        Labeled data with the classes in `obs[label_key]`, as in `fit_em`; None fits the target
        alone.
    label_key : str, default "label"
        Column of `source.obs` holding the source's classes.
    n_domains : int, sequence of int or None, default None
        K or a list of K (None: as in `fit_em`); each K is sampled, and K is chosen by
        `criterion`.
    domains : str, default "anchored"
        "anchored" or "free", as in `fit_em`.
    n_novel : int or sequence of int, default (0, 1, 2)
        Number(s) of novel domains tried when `n_domains` is None, as in `fit_em`.
    model : callable or None, default None
        The NumPyro model, as in `fit_svi` (None: the same default).
    model_options : dict or None, default None
        Keyword arguments passed to the model.
    n_factors : int, default 15
        Number of latent factors q.
    criterion : str, default "loo"
        How K is chosen among several, as in `fit_svi`.
    num_warmup : int, default 500
        NUTS warm-up iterations per chain (step size and mass matrix adaptation).
    num_samples : int, default 500
        Draws kept per chain.
    num_chains : int, default 4
        Number of chains (R-hat needs at least 2).
    chain_method : str, default "vectorized"
        "vectorized" (all chains in one compiled program; the fastest on a CPU for small
        data), "sequential", or "parallel" (one device per chain).
    target_accept : float, default 0.8
        NUTS's target acceptance probability; raise it (0.9, 0.95) when there are divergent
        transitions.
    max_tree_depth : int, default 8
        Largest NUTS tree depth.
    init_jitter : float, default 0.1
        Standard deviation of the noise (on the unconstrained scale) added to the EM fit's
        values to start each chain.
    progress_bar : bool, default False
        Show progress bars (held-out fits, EM warm start, NUTS, posterior draws).
    seed : int, default 0
        Random seed (EM warm start, chain starts, NUTS).
    dtype : str, default "float64"
        "float64" (the default here: NUTS's energy error is sensitive to rounding) or "float32".
    calibrate : str or float, default "auto"
        As in `fit_svi`: a temperature applied to each draw's domain probabilities before they
        are averaged.
    em_options : dict or None, default None
        Settings of the EM warm start, as in `fit_svi`.
    source_labels : array-like or None, default None
        One label per row when `source` is an array.
    spatial : array-like or None, default None
        (n, 2) spot coordinates when `target` is an array.
    **data_options
        How expression and space are read: the data options of `fit_em` (`layer`, `counts`,
        `genes`, `n_genes`, `standardize`, `source_batch_key`, `graph`, ...).

    Returns
    -------
    TransSTResult
        As `fit_svi`'s, with the draws of every chain (chains x draws, chain by chain) in
        `.posterior` and `.spot_loglik`, and `info["mcmc"]`: `rhat` and `ess_bulk` per site
        (largest R-hat and smallest ESS over the site's elements), `rhat_max`, `ess_min`,
        `divergences`, `mean_tree_size`, `chain_agreement` (per chain, the share of spots whose
        most probable domain under that chain is the pooled one), `seconds`.
        `to_inference_data(res)` gives ArviZ InferenceData with a chain dimension.

    Raises
    ------
    ValueError
        A bad option value (num_chains, chain_method, target_accept, ...) or any input error of
        `fit_em`.
    TypeError
        An argument of the wrong type or an unknown keyword argument.

    See Also
    --------
    fit_svi : The same model by variational inference.
    fit_em : The EM/ICM fit that starts the chains.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=12, width=12, n_genes=100)
    >>> res = tb.fit_mcmc(target, source, label_key="label", n_domains=4, n_factors=5,
    ...                   num_warmup=100, num_samples=100, num_chains=2)
    >>> res.spot_loglik.shape
    (200, 144)
    """
    t0 = time.perf_counter()
    st = settings_from(MCMCSettings, locals())
    st.check()
    em = warm_start_settings(criterion, n_factors, seed, dtype, domains, em_options)
    job = setup(target, source, label_key, n_domains, n_novel, calibrate, em, source_labels, spatial,
                data_options, None, progress_bar)
    job, em, held = H.choose_transfer(job, label_key, em, held_out_fit)
    prep, mode = job.prep, job.mode
    model, em, opts = numpyro_model(model, None, model_options, em, mode)
    with V.recorded_warnings(job.notes), precision(dtype):
        out = fit_arrays(prep, job.request, em, mode, mesh=None)
        res, draws = run_mcmc(prep, out, model, opts, st, em, job.ds, mode, criterion, progress_bar)
        V.unmixed_chains(res.info["mcmc"]["rhat"], RHAT_OK)
    return finish(res, job, calibrate, label_key, em, t0, draws=draws, held=held)


def warm_start_settings(criterion: str, n_factors: int, seed: int, dtype: str, domains: str,
                        em_options: dict | None) -> EMSettings:
    """A NumPyro path's checks before any work: its K criterion, and the settings of its EM
    warm start (`em_options` over the path's own n_factors, seed, dtype and domains)."""
    if criterion not in ("loo", "waic") + CRITERIA:
        raise ValueError(f"criterion must be one of {('loo', 'waic') + CRITERIA}, got {criterion!r}")
    em = EMSettings(n_factors=n_factors, seed=seed, dtype=dtype, domains=domains, **(em_options or {}))
    em.check()
    return em


def numpyro_model(model, form, model_options, em: EMSettings, mode: str):
    """The NumPyro model a fit samples, its options and the EM warm start's settings: a user's
    model or a loadings prior (`form`) sees the expression (the joint variant); by default the
    variant's own model (variants.py), and without a source `fixed_loadings_model` (free
    loadings drift along their GL(q) ridge under a mean-field guide: models.no_transfer_model)."""
    from . import models as M

    opts = dict(model_options or {})
    if (model is not None or form is not None) and em.variant is None:
        em = replace(em, variant="joint")
    if model is None:
        var = VR.get(resolve_variant(em, mode))
        model = getattr(M, var.svi_model if mode != "none" else var.svi_model_no_source)
        if mode != "none" and not var.on_scores:
            opts.setdefault("form", form or "global")
    return model, em, opts


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
    T, res.info["calibration"], res.info["calibration_ece"], scheme, res.info["conformal"] = H.temperature(
        calibrate, job.source, label_key, em, job.ds, held_out_fit, held, job.progress)
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


def spots_mesh(devices, em: EMSettings):
    """The mesh the target's spots are split over (None: one device), checked against the
    settings before any work."""
    mesh = shard.mesh(devices)
    if mesh is not None and em.transfer == "cv":
        raise ValueError("devices: transfer='cv' (the published code's cross-validated lambda) runs on "
                         "one device; use transfer='auto' (the default) or 'eb', or devices=None")
    return mesh
