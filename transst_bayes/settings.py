"""Every settings dataclass of the fits and the option values they accept, with their defaults
written once: `EMSettings` (the EM path, and the EM warm start of SVI), `SVISettings`, the domain
modes, the default novel-domain counts, `MCMCSettings`, and `resolve_variant` (which clustering variant a fit
runs)."""

from __future__ import annotations

from dataclasses import dataclass

from . import validate as V
from . import variants as VR
from .em.loadings import TRANSFER_MODES
from .selection import CRITERIA, DEFAULT_CRITERION
from .svi.guides import GUIDES

DOMAIN_MODES = ("anchored", "free")
DEFAULT_N_NOVEL = (0, 1, 2)
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
    spot_rows : int, default 0
        Rows the target's spots are padded to (zero rows of weight 0, which change no sum), so
        that fits of sections of different sizes run the same compiled programs; 0: none (with
        it, the spot graph's neighbour lists and colour classes are padded to multiples of 4
        as well). The source's held-out fits set it to their largest part's spots.
    source_rows : int, default 0
        Rows the source's spots are padded to, as `spot_rows` (the held-out fits: their
        largest source).
    domain_rows : int, default 0
        Columns the domains are padded to (padding domains that no spot takes and that add
        nothing to the objective), so that fits of different K share compiled programs; 0 or
        at most K: none. The held-out fits set it to the largest part's K.

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
    spot_rows: int = 0  # the target's spots padded to this many rows (0: none): shared programs
    source_rows: int = 0  # the source's, likewise
    domain_rows: int = 0  # the domains padded to this many columns (0: none): shared programs

    def check(self) -> None:
        if self.domains not in DOMAIN_MODES:
            raise ValueError(f"domains must be one of {DOMAIN_MODES}, got {self.domains!r}")
        if self.transfer not in ("auto",) + TRANSFER_MODES:
            raise ValueError(f"transfer must be one of {('auto',) + TRANSFER_MODES}, got {self.transfer!r}")
        if self.variant is not None:
            VR.get(self.variant)
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
        V.integer("spot_rows", self.spot_rows, 0)
        V.integer("source_rows", self.source_rows, 0)
        V.integer("domain_rows", self.domain_rows, 0)

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
    return VR.TWO_STAGE.name if mode != "none" and em.domains == "anchored" else VR.JOINT.name


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


CHAIN_METHODS = ("vectorized", "sequential", "parallel")


@dataclass(frozen=True)
class MCMCSettings:
    """Settings of the MCMC path (`fit_mcmc` builds one from its arguments).

    Attributes
    ----------
    n_factors : int, default 15
        Number of latent factors q.
    num_warmup : int, default 500
        NUTS warm-up (adaptation) iterations per chain.
    num_samples : int, default 500
        Draws kept per chain.
    num_chains : int, default 4
        Number of chains (R-hat needs at least 2).
    chain_method : str, default "vectorized"
        How chains run: "vectorized" (one compiled program for all chains; fastest on CPU for
        small data), "sequential" or "parallel" (one device per chain).
    target_accept : float, default 0.8
        NUTS's target acceptance probability (raise it when there are divergences).
    max_tree_depth : int, default 8
        Largest NUTS tree depth (at most 2**depth gradient evaluations per draw).
    init_jitter : float, default 0.1
        Standard deviation of the (unconstrained) noise added to the EM fit's values to start
        each chain.
    seed : int, default 0
        Random seed.
    dtype : str, default "float64"
        "float32" or "float64".

    See Also
    --------
    fit_mcmc, SVISettings, EMSettings
    """

    n_factors: int = 15
    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    chain_method: str = "vectorized"
    target_accept: float = 0.8
    max_tree_depth: int = 8
    init_jitter: float = 0.1
    seed: int = 0
    dtype: str = "float64"

    def check(self) -> None:
        for name in ("num_warmup", "num_samples", "num_chains", "max_tree_depth", "n_factors"):
            V.integer(name, getattr(self, name), 1)
        V.integer("seed", self.seed, 0)
        V.number("init_jitter", self.init_jitter, 0.0)
        V.number("target_accept", self.target_accept, 0.0, strict=True)
        if not self.target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")
        if self.chain_method not in CHAIN_METHODS:
            raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {self.chain_method!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
