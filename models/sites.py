"""The model's sample-site names, spelled once, and the map between parameters and site values.

Every model in this folder samples its global parameters under these names; `fit_svi` starts
the guide from an EM fit through `to_sites` and reads posterior draws back through
`from_sites`; `summary` labels the ArviZ dimensions by `DIMS`. Site shapes carry the plates
they are sampled under: psi and phi (p, 1) in plate "gene" (dim -2), Sigma (K, 1, q, q) in
plate "domain" (dim -2).
"""

from __future__ import annotations

from typing import NamedTuple


class Params(NamedTuple):
    """Global parameters in the EM path's shapes (a leading draw axis allowed); None: absent."""
    W: object = None  # (p, q)
    psi: object = None  # (p,)
    mu: object = None  # (K, q)
    Sigma: object = None  # (K, q, q)
    beta: object = None  # ()
    tau: object = None  # () global transfer scale
    kappa: object = None  # () anchoring scale
    phi: object = None  # (p,) per-gene transfer scale (horseshoe)


W, PSI, MU, SIGMA, BETA, TAU, KAPPA, PHI = Params._fields  # the site names are the fields' names
Z, X = "z", "x"  # explicit per-spot factors (explicit_z_model), the observed expression

# labelled dimensions of each global site as `from_sites` returns it (without the draw axis)
DIMS = {W: ("gene", "factor"), PSI: ("gene",), PHI: ("gene",), MU: ("domain", "factor"),
        SIGMA: ("domain", "factor", "factor_")}
_TO = {PSI: lambda v: v[..., None], PHI: lambda v: v[..., None], SIGMA: lambda v: v[..., None, :, :]}
_FROM = {PSI: lambda v: v[..., 0], PHI: lambda v: v[..., 0], SIGMA: lambda v: v[..., 0, :, :]}


def to_sites(params: Params) -> dict:
    """{site name: value in the site's shape} of the parameters that are not None."""
    return {k: _TO.get(k, _same)(v) for k, v in params._asdict().items() if v is not None}


def from_sites(values: dict) -> Params:
    """Parameters from site values (a point, or draws with leading axes); absent sites: None."""
    return Params(**{k: _FROM.get(k, _same)(values[k]) for k in Params._fields if k in values})


def _same(v):
    return v
