"""The SVI path (`fit.fit_svi`): the TransST models of `transst_bayes.models` fitted by stochastic
variational inference.

Variational EM: SVI steps on the global parameters with the domain labels summed out per spot
under the mean-field Potts field, alternating with refreshes of that field from the current
responsibilities. Warm start from the EM/ICM solution; guides AutoDelta ("delta"),
AutoNormal ("normal"), AutoLowRankMultivariateNormal ("lowrank"); minibatches over spots;
stopping on the relative change of the ELBO between rounds.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import SVI, Trace_ELBO, init_to_value

from .. import factor as F
from .. import mrf
from .. import shard
from .. import plan as D
from .. import validate as V
from .. import variants as VR
from ..job import EMRun, data_fields, k_table_row, mark_chosen, settings_record, shared_info, source_fields
from ..settings import SVISettings
from ..models import sites
from ..result import TransSTResult, entropy
from ..selection import DEFAULT_CRITERION, criteria
from .guides import GUIDES, point_estimate, spot_terms


def _init_values(fit, W_s, form: str, has_source: bool, anchored: bool) -> dict:
    """The model's site values at the EM fit (the guide's starting point)."""
    return sites.to_sites(sites.Params(
        W=fit.W, psi=fit.psi, mu=fit.mu, Sigma=fit.Sigma,
        beta=jnp.clip(fit.beta, 1e-3, mrf.BETA_MAX - 1e-3),
        tau=jnp.sqrt(jnp.maximum(fit.tau2, 1e-8)) if has_source else None,
        phi=jnp.ones((fit.W.shape[0],), fit.W.dtype) if has_source and form == "horseshoe" else None,
        kappa=jnp.sqrt(fit.kappa2) if anchored else None))


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


def run_svi(prep, out: EMRun, model, opts: dict, st: SVISettings, em, ds, mode: str, criterion: str,
            progress_bar: bool, mesh) -> tuple:
    """The SVI path from the EM run `out` (its warm start): each K's rounds and posterior draws
    (`_svi_one`), then the result (`assemble_posterior`); (result, the chosen K's per-draw domain
    log-probabilities, which `fit.finish` tempers draw by draw)."""
    t_svi = time.perf_counter()
    lay = shard.layout(prep.X.shape[0], mesh)
    fits = {K: _svi_one(prep, out, K, model, opts, st, mode, progress_bar, lay) for K in out.Ks}
    out.timings["svi"] = time.perf_counter() - t_svi
    ta = time.perf_counter()
    res = assemble_posterior(prep, out, fits, out.Ks, st, em, ds, mode, criterion, opts, model)
    res.info["timings"]["assemble"] = time.perf_counter() - ta
    return res, fits[res.n_domains]["dlp"]


class ModelSetup(NamedTuple):
    """What both NumPyro paths (SVI rounds, NUTS) start from at one K: the model with its
    options bound, its data, the site values at the EM fit and the options used."""
    model: object  # model(data, batch_size=None)
    data: object  # models.SpotData
    init: dict  # {site: value at the EM fit}
    opts: dict
    lay: shard.Layout
    terms: object  # compiled (site values, data) -> per-spot domain terms (`spot_terms`)


def model_setup(prep, out: EMRun, K: int, model, opts: dict, n_factors: int, dtype: str,
                lay: shard.Layout, mode: str) -> ModelSetup:
    """The model, its data and starting values at K from the EM run `out`: the Potts field
    from the EM fit's responsibilities, anchored domains where the model takes `domains`, the
    EM fit's data term (power on the likelihood, the source classifier's term)."""
    from ..models import SpotData

    dt = jnp.dtype(dtype)
    fit = out.fits[K]
    W_s = None if mode == "none" else out.source.W
    g = shard.graph(prep.graph, lay, dt)
    X = shard.rows(out.transfer.Z if VR.get(out.variant).on_scores else prep.X, lay, dt)
    R = shard.rows(fit.state.R, lay, dt)
    plan = out.plans[K]
    prior = D.domain_prior(plan, *out.anchors, n_factors, dt)
    opts = dict(opts)
    # anchored domains need a model that takes `domains` (the package's); another model fits
    # free domains
    anchored = bool(plan.classes) and "domains" in inspect.signature(model).parameters
    if anchored:
        opts.setdefault("domains", "anchored")
    # the EM fit's data term: the power on the expression likelihood and the source
    # classifier's term (anchored domains whose classes carry over: classifier.py)
    weight, term = out.data_terms[K]
    term = None if term is None or not anchored else shard.rows(term, lay, dt)
    if term is not None:
        # as in the EM fit: kappa is the generative fit's empirical-Bayes value (the
        # classifier's term is no likelihood of the expression)
        opts.setdefault("kappa", float(np.sqrt(fit.state.kappa2)))
    data = SpotData(X=X, field=mrf.neighbour_sums(R, g.nbr, g.mask), W_s=W_s,
                    prior=prior if anchored else None, w=shard.weights(lay, dt),
                    W=jnp.asarray(fit.state.W, dt), psi=jnp.asarray(fit.state.psi, dt),
                    weight=float(weight), classifier=term)
    learn_kappa = anchored and opts.get("kappa") is None
    init = _init_values(fit.state, W_s, opts.get("form", "global"), W_s is not None, learn_kappa)
    m = partial(model, K=K, n_factors=n_factors, **opts)
    full = partial(m, batch_size=None)
    # one program for the per-spot terms: the Potts-field refresh, the posterior draws, the labels
    terms = jax.jit(lambda v, d: spot_terms(full, d, v))
    return ModelSetup(m, data, init, opts, lay, terms)


def draw_terms(ms: ModelSetup, samples: dict, data, progress_bar: bool, K: int):
    """Per-draw domain log-probabilities (S, n, K) and per-spot log-likelihood (S, n) of the
    posterior draws `samples` ({site: (S, ...)}), the compiled per-spot terms of the full-data
    model run once per draw (draws sliced in NumPy: vmap would hold the intermediates of all S
    draws at once; a lax.map of them was where XLA's CPU runtime first deadlocked, on batched
    LAPACK calls: lapack_guard)."""
    wait = shard.waiter(ms.lay)
    S = next(iter(samples.values())).shape[0]
    draws = range(S)
    if progress_bar:
        from tqdm.auto import tqdm

        draws = tqdm(draws, desc=f"posterior draws K={K}")
    per_draw = [wait(ms.terms({k: v[s] for k, v in samples.items()}, data)) for s in draws]
    return tuple(jnp.stack([shard.real(x, ms.lay) for x in a]) for a in zip(*per_draw))


def point_terms(ms: ModelSetup, values: dict, data):
    """The expression log-likelihood per domain at the point `values` (a zero Potts field adds
    the same log(1/K) to every domain) and its beta: what the labels' ICM needs (`_icm_labels`)."""
    ll, _ = ms.terms(values, data._replace(field=jnp.zeros_like(data.field)))
    return shard.real(ll, ms.lay), None if sites.BETA not in values else float(values[sites.BETA])


def _svi_one(prep, out, K, model, opts, st: SVISettings, mode, progress_bar, lay: shard.Layout):
    ms = model_setup(prep, out, K, model, opts, st.n_factors, st.dtype, lay, mode)
    m, data, opts = ms.model, ms.data, ms.opts
    g = shard.graph(prep.graph, lay, jnp.dtype(st.dtype))
    nbr, mask = g.nbr, g.mask
    kw = {"init_loc_fn": init_to_value(values=ms.init)}
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
    terms = ms.terms
    point = jax.jit(lambda state, d: point_estimate(guide, svi.get_params(state), full, d))
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
    dlp, ll = draw_terms(ms, samples, data, progress_bar, K)
    if sites.Z in samples:  # per-spot draws: the real spots'
        samples[sites.Z] = samples[sites.Z][:, : lay.n]
    pt = point(state, data) if st.batch_size is None else \
        jax.jit(lambda p, d: point_estimate(guide, p, full, d))(params, data)
    point_ll, point_beta = point_terms(ms, pt, data)
    return {"samples": samples, "dlp": dlp, "spot_loglik": ll, "losses": np.asarray(losses),
            "converged": converged, "data": data, "n_rounds": len(losses), "params": params,
            "point_loglik": point_ll, "point_beta": point_beta,
            "info": {"svi_rounds": len(losses), "svi_converged": bool(converged)}}


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


def assemble_posterior(prep, out, fits, Ks, st, em, ds, mode, criterion, opts, model, method: str = "svi"):
    """The result of a NumPyro path (`method` "svi" or "mcmc") from its fits per K: K chosen by
    `criterion`, posterior means, probabilities averaged over the draws, labels by ICM."""
    n, p = prep.X.shape
    q = st.n_factors
    table = []
    for K in Ks:
        f = fits[K]
        em_fit = out.fits[K]
        dlp = np.asarray(f["dlp"], np.float64)
        proba = np.exp(dlp - np.logaddexp.reduce(dlp, axis=-1, keepdims=True)).mean(axis=0)
        ll_em = out.generative_loglik[K]  # as fit_em's table: the generative fit's
        row = {"K": K, "loglik": ll_em}
        row.update(criteria(ll_em, K, q, n, float(entropy(proba).sum()),
                            anchored=bool(out.plans[K].classes), n_anchored=len(out.plans[K].classes)))
        beta_draws = np.asarray(f["samples"].get(sites.BETA, np.zeros(f["spot_loglik"].shape[0])))
        row.update(_waic_loo(np.asarray(f["spot_loglik"], np.float64), beta_draws))
        if method == "svi":
            row.update({"elbo": -float(f["losses"][-1]), "n_rounds": f["n_rounds"],
                        "converged": bool(f["converged"])})
        else:
            row.update(f["row"])
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
    if method == "svi" and not f["converged"]:
        V.unconverged("SVI fit", chosen, f["n_rounds"] * st.steps_per_round,
                      f"more than rtol = {st.rtol:g} between its last rounds; raise max_rounds (now {st.max_rounds})")
    smp = f["samples"]
    em_fit = out.fits[chosen]
    mean = sites.from_sites({k: v.mean(0) for k, v in smp.items()})  # sites the model lacks: EM's
    em_state = em_fit.state
    W = np.asarray(em_state.W if mean.W is None else mean.W)
    psi = np.asarray(em_state.psi if mean.psi is None else mean.psi)
    mu = np.asarray(em_state.mu if mean.mu is None else mean.mu)
    Sigma = np.asarray(em_state.Sigma if mean.Sigma is None else mean.Sigma)
    proba = f["proba"]
    dt = jnp.dtype(st.dtype)
    if VR.get(out.variant).on_scores:  # the scores the model clustered
        factors = np.asarray(out.transfer.Z)
    elif sites.Z in smp:
        factors = smp[sites.Z].mean(0)
    else:
        factors = np.asarray(_mean_factors(*(jnp.asarray(a, dt) for a in (prep.X, W, psi, mu, Sigma, proba))))
    plan = D.named_after_fit(out.plans[chosen], proba, out.class_post, prep.source_classes)
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
    src = out.source
    settings = settings_record(
        asdict(st), ds, mode, out.variant, Ks, method=method, model=getattr(model, "__name__", str(model)),
        model_options={k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in opts.items()},
        criterion=criterion, em=asdict(em), domains_used="anchored" if plan.classes else "free")
    labels = _icm_labels(prep.graph, proba, f)
    return TransSTResult(
        labels=labels, proba=proba, factors=np.asarray(factors), spot_loglik=np.asarray(f["spot_loglik"]),
        W_t=np.asarray(W), psi=np.asarray(psi), mu=np.asarray(mu), Sigma=Sigma, tau=tau,
        beta=float("nan") if mean.beta is None else float(mean.beta), kappa=kappa,
        domain_names=list(plan.names), posterior={k: v for k, v in smp.items() if k != sites.Z},
        **source_fields(prep, src), **data_fields(prep),
        trace=-np.asarray(f["losses"]), k_table=table, settings=settings,
        info={**shared_info(prep, out, chosen, em, plan, labels), **f["info"]},
    )

