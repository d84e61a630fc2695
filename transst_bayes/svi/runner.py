"""fit_svi: the TransST models of `transst_bayes.models` fitted by stochastic variational inference.

Variational EM: SVI steps on the global parameters with the domain labels summed out per spot
under the mean-field Potts field, alternating with refreshes of that field from the current
responsibilities. Warm start from the EM/ICM solution; guides AutoDelta ("delta"),
AutoNormal ("normal"), AutoLowRankMultivariateNormal ("lowrank"); minibatches over spots;
stopping on the relative change of the ELBO between rounds.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoDelta, AutoNormal

from .. import factor as F
from .. import mrf
from .. import shard
from .. import plan as D
from .. import validate as V
from ..em.driver import EMSettings, choose_transfer, fit_arrays, finish, resolve_variant, shared_info, spots_mesh
from ..job import (DEFAULT_N_NOVEL, data_used, k_table_row, mark_chosen, precision, settings_from,
                   settings_record, setup, source_fit)
from ..models import sites
from ..result import Diagnostics, SpotOutputs, TargetParams, TransSTResult, entropy
from ..selection import CRITERIA, DEFAULT_CRITERION, criteria
from .guides import GUIDES


@dataclass(frozen=True)
class SVISettings:
    """Settings of the SVI path (`fit_svi` builds one from its arguments).

    Attributes
    ----------
    guide : str, default "normal"
        "delta", "normal" or "lowrank".
    n_factors : int, default 15
        Number of latent factors q.
    lr : float, default 0.01
        Learning rate of the Adam optimiser.
    steps_per_round : int, default 200
        SVI steps between two refreshes of the Potts field.
    max_rounds : int, default 30
        Largest number of rounds per K.
    min_rounds : int, default 2
        Rounds run before the stopping rule applies.
    rtol : float, default 1e-4
        Stop when the mean loss of a round changes by less than `rtol` (relative).
    batch_size : int or None, default None
        Spots per SVI step; None: every spot.
    num_samples : int, default 100
        Posterior draws.
    init_scale : float, default 0.01
        Initial scale of the "normal" and "lowrank" guides.
    rank : int, default 10
        Rank of the "lowrank" guide's covariance factor.
    seed : int, default 0
        Random seed.
    dtype : str, default "float32"
        "float32" or "float64".

    See Also
    --------
    fit_svi, EMSettings
    """

    guide: str = "normal"
    n_factors: int = 15
    lr: float = 0.01
    steps_per_round: int = 200
    max_rounds: int = 30
    min_rounds: int = 2
    rtol: float = 1e-4  # stop when the mean loss of a round changes by less than rtol (relative)
    batch_size: int | None = None
    num_samples: int = 100
    init_scale: float = 0.01
    rank: int = 10  # rank of the "lowrank" guide's covariance factor
    seed: int = 0
    dtype: str = "float32"

    def check(self) -> None:
        if self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {sorted(GUIDES)}, got {self.guide!r}")
        V.number("lr", self.lr, 0.0, strict=True)
        V.number("rtol", self.rtol, 0.0)
        for name in ("steps_per_round", "max_rounds", "num_samples", "rank", "n_factors"):
            V.integer(name, getattr(self, name), 1)
        V.integer("seed", self.seed, 0)
        V.integer("batch_size", self.batch_size, 1, none_ok=True)


def _unmasked(fn):
    """The distribution under any masks (`numpyro.handlers.mask` wraps a site's distribution)."""
    from numpyro.distributions import MaskedDistribution

    while isinstance(fn, MaskedDistribution):
        fn = fn.base_dist
    return fn


def _mixture_site(tr: dict):
    """The model's DomainMixture site and its distribution."""
    from ..models.likelihood import DomainMixture

    found = [s for s in tr.values() if s["type"] == "sample" and isinstance(_unmasked(s["fn"]), DomainMixture)]
    if len(found) != 1:
        raise ValueError(
            "the model must have exactly one DomainMixture site (the per-spot domain label summed "
            f"out), found {len(found)}; build the spot likelihood with models.DomainMixture"
        )
    return found[0], _unmasked(found[0]["fn"])


def spot_terms(model, data, values: dict):
    """Per-spot log p(y = k, . | globals) (n, K) and per-spot log-likelihood of the observed
    sites (n,), with every latent site fixed to `values`."""
    tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=values)).get_trace(data)
    site, mixture = _mixture_site(tr)
    dlp = mixture.domain_log_prob(site["value"])
    ll = jnp.zeros(dlp.shape[:-1], dlp.dtype)
    for s in tr.values():
        if s["type"] == "sample" and s["is_observed"]:
            lp = s["fn"].log_prob(s["value"])
            ll = ll + lp.reshape(lp.shape[: ll.ndim]) if lp.ndim >= ll.ndim else ll + lp
    return dlp, ll


def _init_values(fit, W_s, form: str, has_source: bool, anchored: bool) -> dict:
    """The model's site values at the EM fit (the guide's starting point)."""
    return sites.to_sites(sites.Params(
        W=fit.W, psi=fit.psi, mu=fit.mu, Sigma=fit.Sigma,
        beta=jnp.clip(fit.beta, 1e-3, mrf.BETA_MAX - 1e-3),
        tau=jnp.sqrt(jnp.maximum(fit.tau2, 1e-8)) if has_source else None,
        phi=jnp.ones((fit.W.shape[0],), fit.W.dtype) if has_source and form == "horseshoe" else None,
        kappa=jnp.sqrt(fit.kappa2) if anchored else None))


def _point(guide, params, full_model, data) -> dict:
    """The guide's point estimate (median / MAP) of every latent site, constrained by replaying
    the full-data model (the guide's own replay keeps the minibatch size of its set-up)."""
    from numpyro.infer.util import constrain_fn

    pre = guide.prefix
    if isinstance(guide, AutoDelta):
        return {k: params[f"{k}_{pre}_loc"] for k in guide._init_locs}
    if isinstance(guide, AutoNormal):
        u = {k: params[f"{k}_{pre}_loc"] for k in guide._init_locs}
    else:
        u = guide._unpack_latent(params[f"{pre}_loc"])
    return constrain_fn(full_model, (data,), {}, u)


def _round_runner(svi, n_steps: int, batch_size):
    """One round of `n_steps` SVI steps as one compiled call: (state, losses, and with
    minibatches the guide's parameters averaged over the round's steps, else None)."""
    average = batch_size is not None

    @jax.jit
    def run(state, data):
        def body(carry, t):
            st, avg = carry
            st, loss = svi.update(st, data, batch_size=batch_size)
            if average:
                avg = jax.tree_util.tree_map(lambda a, b: a + (b - a) / (t + 1), avg,
                                             svi.get_params(st))
            return (st, avg), loss

        avg0 = svi.get_params(state) if average else None
        (state, avg), losses = jax.lax.scan(body, (state, avg0), jnp.arange(n_steps, dtype=jnp.float32))
        return state, losses, avg

    return run


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
    from .. import models as M

    t0 = time.perf_counter()
    st = settings_from(SVISettings, locals())
    st.check()
    if criterion not in ("loo", "waic") + CRITERIA:
        raise ValueError(f"criterion must be one of {('loo', 'waic') + CRITERIA}, got {criterion!r}")
    if form is not None and form not in M.FORMS:
        raise ValueError(f"form must be one of {M.FORMS}, got {form!r}")
    em = EMSettings(n_factors=n_factors, seed=seed, dtype=dtype, domains=domains, **(em_options or {}))
    em.check()
    mesh = spots_mesh(devices, em)
    job = setup(target, source, label_key, n_domains, n_novel, calibrate, em, source_labels, spatial,
                data_options, mesh, progress_bar)
    job, em, held = choose_transfer(job, label_key, em)
    prep, mode = job.prep, job.mode
    n = prep.X.shape[0]
    if batch_size is not None and batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} target spots; lower it or pass None")
    opts = dict(model_options or {})
    if (model is not None or form is not None) and em.variant is None:
        em = replace(em, variant="joint")  # a user's model, or a loadings prior: the expression
    if model is None:
        if resolve_variant(em, mode) == "two_stage":
            model = M.scores_model
        elif mode != "none":
            model = M.transst_model
            opts.setdefault("form", form or "global")
        else:  # the free model's loadings drift under a mean-field guide (models.no_transfer_model)
            model = M.fixed_loadings_model
    with V.recorded_warnings(job.notes), precision(dtype):
        out = fit_arrays(prep, job.request, em, mode, mesh=mesh)
        Ks = out["Ks"]
        t_svi = time.perf_counter()
        lay = shard.layout(n, mesh)
        fits = {K: _svi_one(prep, out, K, model, opts, st, mode, progress_bar, lay) for K in Ks}
        out["timings"]["svi"] = time.perf_counter() - t_svi
        ta = time.perf_counter()
        res = _assemble_svi(prep, out, fits, Ks, st, em, job.ds, mode, criterion, opts, model)
        res.info["timings"]["assemble"] = time.perf_counter() - ta
    # the temperature is found by EM fits of held-out source sections (calibration.py) and
    # tempers each posterior draw's probabilities before they are averaged; labels stay the
    # argmax of the model's average
    return finish(res, job, calibrate, label_key, em, t0, draws=fits[res.n_domains]["dlp"], held=held)


def _svi_one(prep, out, K, model, opts, st: SVISettings, mode, progress_bar, lay: shard.Layout):
    from ..models import SpotData

    dt = jnp.dtype(st.dtype)
    fit = out["fits"][K]
    W_s = None if mode == "none" else out["source"].W
    g = shard.graph(prep.graph, lay, dt)
    nbr, mask = g.nbr, g.mask
    X = shard.rows(out["transfer"].Z if out["variant"] == "two_stage" else prep.X, lay, dt)
    R = shard.rows(fit.state.R, lay, dt)
    plan = out["plans"][K]
    prior = D.domain_prior(plan, *out["anchors"], st.n_factors, dt)
    opts = dict(opts)
    # anchored domains need a model that takes `domains` (the package's); another model fits
    # free domains
    anchored = bool(plan.classes) and "domains" in inspect.signature(model).parameters
    if anchored:
        opts.setdefault("domains", "anchored")
    # the EM fit's data term: the power on the expression likelihood and the source
    # classifier's term (anchored domains whose classes carry over: classifier.py)
    weight, term = out["data_terms"][K]
    term = None if term is None or not anchored else shard.rows(term, lay, dt)
    if term is not None:
        # as in the EM fit: kappa is the generative fit's empirical-Bayes value (the
        # classifier's term is no likelihood of the expression)
        opts.setdefault("kappa", float(np.sqrt(fit.state.kappa2)))
    data = SpotData(X=X, field=mrf.neighbour_sums(R, nbr, mask), W_s=W_s,
                    prior=prior if anchored else None, w=shard.weights(lay, dt),
                    W=jnp.asarray(fit.state.W, dt), psi=jnp.asarray(fit.state.psi, dt),
                    weight=float(weight), classifier=term)
    m = partial(model, K=K, n_factors=st.n_factors, **opts)
    learn_kappa = anchored and opts.get("kappa") is None
    init = init_to_value(values=_init_values(fit.state, W_s, opts.get("form", "global"), W_s is not None,
                                             learn_kappa))
    kw = {"init_loc_fn": init}
    if st.guide != "delta":
        kw["init_scale"] = st.init_scale
    if st.guide == "lowrank":
        kw["rank"] = st.rank
    guide = GUIDES[st.guide](m, **kw)
    svi = SVI(m, guide, numpyro.optim.Adam(st.lr), Trace_ELBO())
    key = jax.random.fold_in(jax.random.PRNGKey(st.seed), K)
    k_init, k_post = jax.random.split(key)
    with numpyro.validation_enabled(False):  # argument checks would run op by op here
        guide.setup(k_init, data, batch_size=st.batch_size)
    # set up, the guide holds no traced values: SVI.init and each round run as one compiled call
    state = jax.jit(partial(svi.init, batch_size=st.batch_size))(k_init, data)
    run = _round_runner(svi, st.steps_per_round, st.batch_size)
    full = partial(m, batch_size=None)

    # the per-spot terms are one program, shared by the Potts-field refresh (at the guide's
    # point estimate) and the posterior draws
    terms = jax.jit(lambda v, d: spot_terms(full, d, v))
    point = jax.jit(lambda state, d: _point(guide, svi.get_params(state), full, d))
    field = jax.jit(lambda dlp: mrf.neighbour_sums(jax.nn.softmax(dlp, axis=-1), nbr, mask))

    def refresh(state, data):
        dlp, _ = terms(point(state, data), data)
        return data._replace(field=field(dlp))

    S = 1 if st.guide == "delta" else st.num_samples

    losses, prev = [], None
    rounds = range(st.max_rounds)
    if progress_bar:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=f"SVI K={K}")
    converged = False
    for r in rounds:
        state, loss, avg = run(state, data)
        loss = np.asarray(loss)
        mean_loss = float(np.mean(loss[len(loss) // 2:]))
        if not np.isfinite(mean_loss):
            raise FloatingPointError(f"SVI loss became non-finite for K={K}; lower lr (now {st.lr})")
        losses.append(mean_loss)
        data = refresh(state, data)
        if progress_bar:
            rounds.set_postfix(loss=f"{mean_loss:.4g}")
        if prev is not None and r + 1 >= st.min_rounds and abs(mean_loss - prev) <= st.rtol * abs(prev):
            converged = True
            break
        prev = mean_loss
    # with minibatches the iterates jitter with the subsampling noise around the optimum (at a
    # constant lr), which narrowed the 90% intervals to 80% coverage at 10k spots: the posterior
    # is read from the last round's average (Polyak-Ruppert), 96% there (benchmarks/svi.py)
    params = avg if st.batch_size is not None else svi.get_params(state)
    with numpyro.validation_enabled(False):
        samples = guide.sample_posterior(k_post, params, data, batch_size=None, sample_shape=(S,))
    samples = {k: np.asarray(v) for k, v in samples.items() if k != sites.X}
    # one compiled call per draw (draws sliced in NumPy): vmap would hold the intermediates of
    # all S draws at once (a lax.map of them was where XLA's CPU runtime first deadlocked, on
    # batched LAPACK calls: lapack_guard)
    wait = shard.waiter(lay)
    draws = range(S)
    if progress_bar:
        from tqdm.auto import tqdm

        draws = tqdm(draws, desc=f"posterior draws K={K}")
    per_draw = [wait(terms({k: v[s] for k, v in samples.items()}, data)) for s in draws]
    dlp, ll = (jnp.stack([shard.real(x, lay) for x in a]) for a in zip(*per_draw))
    if sites.Z in samples:  # per-spot draws: the real spots'
        samples[sites.Z] = samples[sites.Z][:, : lay.n]
    # the expression log-likelihood per domain at the guide's point estimate (a zero Potts field
    # adds the same log(1/K) to every domain), and its beta: the labels' ICM (`_icm_labels`)
    pt = point(state, data) if st.batch_size is None else \
        jax.jit(lambda p, d: _point(guide, p, full, d))(params, data)
    point_ll, _ = terms(pt, data._replace(field=jnp.zeros_like(data.field)))
    return {"samples": samples, "dlp": dlp, "spot_loglik": ll, "losses": np.asarray(losses),
            "converged": converged, "data": data, "n_rounds": len(losses), "params": params,
            "point_loglik": shard.real(point_ll, lay),
            "point_beta": None if sites.BETA not in pt else float(pt[sites.BETA])}


def _icm_labels(graph, proba: np.ndarray, fit: dict) -> np.ndarray:
    """The labels of an SVI fit as fit_em makes its own: ICM under the Potts prior (the guide's
    point estimate of beta and of the domains' likelihood), started at the most probable domain
    of the posterior-averaged probabilities; the argmax of those where the model has no beta."""
    start = np.argmax(proba, axis=1)
    if fit["point_beta"] is None:
        return start.astype(np.int64)
    ll = jnp.asarray(fit["point_loglik"])
    g = mrf.on_device(graph, ll.dtype)
    y = mrf.icm(jnp.asarray(start, jnp.int32), ll, g.nbr, g.mask, g.colors, g.n_colors,
                jnp.asarray(fit["point_beta"], ll.dtype))
    return np.asarray(y, np.int64)


def _waic_loo(ll: np.ndarray, beta: np.ndarray) -> dict:
    import arviz as az

    if ll.shape[0] < 2:
        return {"elpd_waic": float("nan"), "p_waic": float("nan"), "elpd_loo": float("nan"),
                "p_loo": float("nan")}
    idata = az.from_dict(posterior={sites.BETA: np.asarray(beta).reshape(1, -1)},
                         log_likelihood={sites.X: ll[None]})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = az.waic(idata)
        lo = az.loo(idata)
    return {"elpd_waic": float(w.elpd_waic), "p_waic": float(w.p_waic),
            "elpd_loo": float(lo.elpd_loo), "p_loo": float(lo.p_loo),
            "pareto_k_max": float(np.max(lo.pareto_k))}


@jax.jit
def _mean_factors(X, W, psi, mu, Sigma, proba):
    """E[z_j | x_j] under the domain probabilities, one compiled call."""
    comp = F.components(F.precompute(X, W, psi), mu, Sigma, W.shape[0])
    return F.mean_factors(proba, comp)


def _assemble_svi(prep, out, fits, Ks, st: SVISettings, em, ds, mode, criterion, opts, model):
    n, p = prep.X.shape
    q = st.n_factors
    table = []
    for K in Ks:
        f = fits[K]
        em_fit = out["fits"][K]
        dlp = np.asarray(f["dlp"], np.float64)
        proba = np.exp(dlp - np.logaddexp.reduce(dlp, axis=-1, keepdims=True)).mean(axis=0)
        ll_em = out["generative_loglik"][K]  # as fit_em's table: the generative fit's
        row = {"K": K, "loglik": ll_em}
        row.update(criteria(ll_em, K, q, n, float(entropy(proba).sum()),
                            anchored=bool(out["plans"][K].classes), n_anchored=len(out["plans"][K].classes)))
        beta_draws = np.asarray(f["samples"].get(sites.BETA, np.zeros(f["spot_loglik"].shape[0])))
        row.update(_waic_loo(np.asarray(f["spot_loglik"], np.float64), beta_draws))
        row.update({"elbo": -float(f["losses"][-1]), "n_rounds": f["n_rounds"],
                    "converged": bool(f["converged"])})
        f["proba"] = proba
        table.append(k_table_row(row))
    if criterion in ("loo", "waic"):
        key = f"elpd_{criterion}"
        if all(np.isfinite(r[key]) for r in table):
            chosen = max(table, key=lambda r: r[key])["K"]
        else:
            chosen = min(table, key=lambda r: r[DEFAULT_CRITERION])["K"]
    else:
        chosen = min(table, key=lambda r: r[criterion])["K"]
    mark_chosen(table, chosen)
    f = fits[chosen]
    if not f["converged"]:
        V.unconverged("SVI fit", chosen, f["n_rounds"] * st.steps_per_round,
                      f"more than rtol = {st.rtol:g} between its last rounds; raise max_rounds (now {st.max_rounds})")
    smp = f["samples"]
    em_fit = out["fits"][chosen]
    mean = sites.from_sites({k: v.mean(0) for k, v in smp.items()})  # sites the model lacks: EM's
    em_state = em_fit.state
    W = np.asarray(em_state.W if mean.W is None else mean.W)
    psi = np.asarray(em_state.psi if mean.psi is None else mean.psi)
    mu = np.asarray(em_state.mu if mean.mu is None else mean.mu)
    Sigma = np.asarray(em_state.Sigma if mean.Sigma is None else mean.Sigma)
    proba = f["proba"]
    dt = jnp.dtype(st.dtype)
    if out["variant"] == "two_stage":  # the scores the model clustered
        factors = np.asarray(out["transfer"].Z)
    elif sites.Z in smp:
        factors = smp[sites.Z].mean(0)
    else:
        factors = np.asarray(_mean_factors(*(jnp.asarray(a, dt) for a in (prep.X, W, psi, mu, Sigma, proba))))
    plan = D.named_after_fit(out["plans"][chosen], proba, out["class_post"], prep.source_classes)
    if mean.kappa is not None:
        kappa = float(mean.kappa)
    elif plan.classes:
        kappa = float(opts["kappa"]) if opts.get("kappa") is not None else float(np.sqrt(em_state.kappa2))
    else:
        kappa = None
    if mean.tau is not None:
        tau = float(mean.tau)
    elif "tau" in opts:
        tau = float(opts["tau"])
    else:
        tau = float("inf")
    src = out["source"]
    settings = settings_record(
        asdict(st), ds, mode, out["variant"], Ks, method="svi", model=getattr(model, "__name__", str(model)),
        model_options={k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in opts.items()},
        criterion=criterion, em=asdict(em), domains_used="anchored" if plan.classes else "free")
    labels = _icm_labels(prep.graph, proba, f)
    return TransSTResult(
        spots=SpotOutputs(labels=labels, proba=proba,
                          factors=np.asarray(factors), spot_loglik=np.asarray(f["spot_loglik"])),
        target=TargetParams(W=np.asarray(W), psi=np.asarray(psi), mu=np.asarray(mu), Sigma=Sigma, tau=tau,
                            beta=float("nan") if mean.beta is None else float(mean.beta), kappa=kappa,
                            domain_names=list(plan.names),
                            posterior={k: v for k, v in smp.items() if k != sites.Z}),
        source=source_fit(prep, src),
        data=data_used(prep),
        diagnostics=Diagnostics(
            trace=-np.asarray(f["losses"]), k_table=table, settings=settings,
            info={**shared_info(prep, out, chosen, em, plan, labels),
                  "svi_rounds": f["n_rounds"], "svi_converged": bool(f["converged"])}),
    )
