"""The EM path's run: the three TransST steps on the compiled EM/ICM kernels (`fit_arrays`, the
only place they are compiled) -> `job.EMRun` -> the result (`assemble`). `fit.fit_em` calls it;
`fit.fit_svi` uses its run as the SVI warm start."""

from __future__ import annotations

import time
from functools import partial
from dataclasses import asdict

import jax
import jax.numpy as jnp
import numpy as np

from .. import classifier as CL
from .. import mrf
from .. import plan as D
from .. import priors as P
from .. import shard
from .. import validate as V
from .. import variants as VR
from ..data import DataSettings, Prepared
from ..job import EMRun, check_k, k_table_row, mark_chosen, settings_record, shared_info, source_fields, data_fields
from ..pca_kmeans import kmeans
from ..result import TransSTResult, entropy
from ..selection import criteria
from ..settings import EMSettings, resolve_variant
from ..support import source_support, warn_unsupported
from .cluster import PADDED, ClusterData, Settings, fit_cluster, init
from .loadings import fit_transfer, scores
from .source import fit_source

GRAPH_STEP = 4  # padded fits: neighbour lists and colour classes rounded up to a multiple of this
SHORT_EM_ITER = 15  # iterations each restart runs before the best one is continued
DEFAULT_K_NO_SOURCE = 7
KAPPA2_INIT = 0.1
def fit_arrays(prep: Prepared, request: tuple, em: EMSettings, mode: str,
               progress_bar: bool = False, mesh=None) -> EMRun:
    """Source, transfer, then one clustering fit per K. `request` = (n_domains, n_novel);
    `mesh` (shard.mesh) splits the target's spots over devices. Per-spot outputs hold the real
    spots only."""
    dt = jnp.dtype(em.dtype)
    # the factor models start from a randomised PCA: a numerical device, not a choice among the
    # model's modes, so its sketch is drawn from one fixed key (seed 0's) and the answer of a
    # fit whose clustering has one deterministic start (anchored domains) is the same for every
    # seed; the seed draws the clustering's random starts (free and novel domains)
    k_src, k_tr, _ = jax.random.split(jax.random.PRNGKey(0), 3)
    k_cl = jax.random.split(jax.random.PRNGKey(em.seed), 3)[2]
    # the spots padded to em.spot_rows / em.source_rows (zero rows of weight 0, `shard`): the
    # held-out fits share their compiled programs ("cv" takes no padding)
    lay = shard.layout(prep.X.shape[0], mesh, 0 if mode == "cv" else em.spot_rows)
    X = shard.rows(prep.X, lay, dt)
    w = shard.weights(lay, dt, always=mode != "cv" and em.spot_rows > 0)
    q = em.n_factors
    timings = {}
    t = time.perf_counter()
    src = Xs = source_labels = None
    if mode != "none":
        C = len(prep.source_classes)
        slay = shard.layout(prep.X_source.shape[0], None, em.source_rows)
        Xs = shard.rows(prep.X_source, slay, dt)
        source_labels = shard.rows(prep.source_labels, slay, np.int32, fill=C)  # padding: no class
        src = _fit_source(Xs, source_labels, C=C, q=q, key=k_src, max_iter=em.source_max_iter, n=slay.n)
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
    if em.spot_rows:  # held-out fits: neighbour lists and colour classes padded alike too
        g = mrf.widen(g, -(-g.nbr.shape[1] // GRAPH_STEP) * GRAPH_STEP, -(-g.n_colors // GRAPH_STEP) * GRAPH_STEP)
    graph = shard.graph(g, lay, dt)
    variant = resolve_variant(em, mode)
    data = tr.Z if VR.get(variant).on_scores else X
    anchors = D.class_anchors(src, tr, variant)
    beta0 = em.beta if em.beta is not None else em.beta_init
    class_logp = None
    # the classifier's term joins the two-stage fit of anchored domains (the default with a
    # labeled source); the joint variant re-fits the loadings and stays generative
    hybrid = anchored and em.classifier > 0 and VR.get(variant).classifier_term
    if hybrid:
        Vs = _source_scores(Xs, src.W, src.psi)
        reg = _fit_classifier(Vs, source_labels, C=len(prep.source_classes))
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
        K_pad = max(K, em.domain_rows)  # held-out fits: padding columns, so Ks share programs
        s = Settings(K=K_pad, variant=variant, mode=mode, learn_beta=em.beta is None,
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
        cdata = ClusterData(data, graph, W_prior, tr.lam, pad_domains(dprior, K_pad), w,
                            alpha=None if not em.domain_rows else jnp.asarray(np.r_[np.zeros(K), np.full(K_pad - K, PADDED)], dt))
        best = _fit_k(cdata, tr, inits, jnp.asarray(beta0, dt), jnp.asarray(KAPPA2_INIT, dt), s=s,
                      wait=shard.waiter(lay))
        gammas[K], terms[K], gen_ll[K] = None, (s.weight, None), em_loglik(best)
        if hybrid and plan.classes and plan.n_novel == 0:
            # the hybrid fit: where the source classifier agrees with the generative fit's
            # domains (its classes carry over), EM goes on from that fit with the classifier's
            # term; the classes that fit left (nearly) empty stay out
            counts = np.bincount(np.asarray(shard.real(best.labels, lay)), minlength=K)[:K]
            found = counts >= max(D.MIN_CLASS_SPOTS, D.MIN_FOUND_SHARE * lay.n)
            F1 = CL.domain_term(class_logp, plan.classes, K, jnp.asarray(1.0, dt))
            gamma = float(_agreement(best.state.R if K_pad == K else best.state.R[:, :K], F1, w))
            F1 = jnp.where(jnp.asarray(found)[None, :], F1, CL.LOG_EXCLUDED)
            if K_pad > K:  # the padding columns' term: any value (alpha keeps every spot out)
                F1 = jnp.pad(F1, ((0, 0), (0, K_pad - K)))
            gammas[K] = gamma
            if gamma >= CL.AGREEMENT_MIN:
                # kappa stays the generative fit's (empirical Bayes on the expression; the
                # classifier's term is no likelihood of it)
                sh = s._replace(weight=em.expression_weight(True), learn_kappa=False)
                best = _run(cdata._replace(classifier=em.classifier * F1), best.state, s=sh, limit=s.max_iter)
                terms[K] = (sh.weight, shard.real(em.classifier * F1[:, :K], lay))
        if not bool(jnp.isfinite(best.objective)):
            raise FloatingPointError(
                f"every restart for K={K} ended with a non-finite objective; try dtype='float64'"
            )
        fits[K], plans[K] = _real_domains(_real_spots(best, lay), K), plan
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    timings["cluster"] = time.perf_counter() - t
    return EMRun(timings=timings, source=src, transfer=tr._replace(Z=Z_real), n_devices=lay.n_devices,
                 fits=fits, plans=plans, Ks=Ks, variant=variant, anchors=anchors, agreement=gammas,
                 data_terms=terms, generative_loglik=gen_ll, source_support=support,
                 class_post=None if src_ll is None else D.class_posterior(src_ll),
                 present=[] if present is None else [prep.source_classes[c] for c in present])


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
    fits = [wait(_run(data, _init(tr.Z, inits[r], tr.W, tr.psi, tr.tau2, beta0, s.K, kappa2_0, data.w, data.alpha),
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


def pad_domains(prior: P.DomainPrior, K_pad: int) -> P.DomainPrior:
    """The domain prior with free rows added up to K_pad domains (the padding columns)."""
    K, q = prior.mean.shape
    if K_pad == K:
        return prior
    free = P.free_prior(K_pad - K, q, prior.mean.dtype)
    return P.DomainPrior(*(jnp.concatenate([a, b]) for a, b in zip(prior, free)))


def _real_domains(f, K: int):
    """A fit's domain fields without the padding columns."""
    if f.state.mu.shape[0] == K:
        return f
    return f._replace(state=f.state._replace(R=f.state.R[:, :K], mu=f.state.mu[:K], Sigma=f.state.Sigma[:K]),
                      loglik=f.loglik[:, :K])


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


def assemble(prep: Prepared, out: EMRun, em: EMSettings, ds: DataSettings, mode: str) -> TransSTResult:
    n, p = prep.X.shape
    q = em.n_factors
    Ks = out.Ks
    table = []
    for K in Ks:
        f, plan = out.fits[K], out.plans[K]
        R = np.asarray(f.state.R, np.float64)
        # K is chosen on the generative fit's likelihood (the classifier's term is no
        # likelihood of the target's expression)
        ll = out.generative_loglik[K]
        row = {"K": K, "n_novel": plan.n_novel if plan.classes else None, "loglik": ll}
        row.update(criteria(ll, K, q, n, float(entropy(R).sum()), anchored=bool(plan.classes),
                            n_anchored=len(plan.classes)))
        row.update({"beta": float(f.state.beta), "kappa": float(np.sqrt(f.state.kappa2)) if plan.classes else None,
                    "n_iter": int(f.n_iter), "converged": bool(f.converged)})
        table.append(k_table_row(row))
    chosen = mark_chosen(table, min(table, key=lambda r: r[em.criterion])["K"])
    f = out.fits[chosen]
    step = _last_change(f, n)
    if not bool(f.converged) and step > FAR_FROM_CONVERGED * em.tol:
        V.unconverged("EM fit", chosen, int(f.n_iter), f"{step:.2g} nats per spot in its last iteration (the "
                      f"stopping rule: {em.tol:g}); raise max_iter (now {em.max_iter})")
    plan = D.named_after_fit(out.plans[chosen], np.asarray(f.state.R), out.class_post, prep.source_classes)
    src, tr = out.source, out.transfer
    tau = float(np.sqrt(f.state.tau2)) if mode == "eb" else float(np.sqrt(tr.tau2)) if mode == "cv" else float("inf")
    settings = settings_record(asdict(em), ds, mode, out.variant, Ks,
                               domains_used="anchored" if plan.classes else "free")
    trace = np.asarray(f.trace.objective)
    two_stage = VR.get(out.variant).on_scores  # the loadings are the transfer step's
    return TransSTResult(
        labels=np.asarray(f.labels, np.int64), proba=np.asarray(f.state.R, np.float64),
        factors=np.asarray(f.Z),
        W_t=np.asarray(tr.W if two_stage else f.state.W), psi=np.asarray(tr.psi if two_stage else f.state.psi),
        mu=np.asarray(f.state.mu), Sigma=np.asarray(f.state.Sigma), tau=tau, beta=float(f.state.beta),
        kappa=float(np.sqrt(f.state.kappa2)) if plan.classes else None, domain_names=list(plan.names),
        **source_fields(prep, src), **data_fields(prep),
        trace=trace[np.isfinite(trace)], k_table=table, settings=settings,
        info={**shared_info(prep, out, chosen, em, plan, np.asarray(f.labels)),
              "trace": _parameter_trace(f, mode, bool(plan.classes))},
    )

