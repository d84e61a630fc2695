"""transst_bayes: transfer-learning spatial factor model (TransST) with a Potts prior.

Fits: `fit_em` (the compiled EM/ICM path), `fit_svi` (NumPyro SVI, posterior draws) and
`fit_mcmc` (NumPyro NUTS, several chains, for small data), each returning a `TransSTResult`
(`load_result` reads a saved one). Scanpy style: `tl.transst`, `tl.markers`,
`tl.transfer_breaking_genes`, `pp` (preprocessing, graph), `pl` (plots). Posterior summaries: `marker_genes`, `spot_summary`, `domain_expression`,
`transfer_breaking_genes`, `to_inference_data`, `align_result`. Data: `simulate`. Scores:
`adjusted_rand_index`, `normalized_mutual_info`, `align_labels`. Compilation cache on disk
(on by default): `compilation_cache`. NumPyro models:
`transst_bayes.models`. Layout: CONTRIBUTING.md.
"""

from __future__ import annotations

import importlib.util as _ilu
import os as _os
import sys as _sys

from ._version import __version__  # noqa: E402
from .cache import compilation_cache  # noqa: E402
from .metrics import adjusted_rand_index, align_labels, normalized_mutual_info  # noqa: E402
from .result import TransSTResult, load_result  # noqa: E402
from .simulate import simulate  # noqa: E402


def _attach_models() -> None:
    """`transst_bayes.models` is the top-level `models/` folder. Installed, setuptools maps it
    into the package; in a source checkout (repository root on sys.path) load it from there."""
    if _ilu.find_spec(__name__ + ".models") is not None:
        return
    here = _os.path.dirname(_os.path.abspath(__file__))
    init = _os.path.join(_os.path.dirname(here), "models", "__init__.py")
    if not _os.path.exists(init):  # pragma: no cover
        return
    spec = _ilu.spec_from_file_location(__name__ + ".models", init,
                                        submodule_search_locations=[_os.path.dirname(init)])
    mod = _ilu.module_from_spec(spec)
    _sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)


_attach_models()
from . import models  # noqa: E402
from .fit import fit_em, fit_mcmc, fit_svi  # noqa: E402
from .settings import EMSettings, MCMCSettings, SVISettings  # noqa: E402
from . import pp, tl  # noqa: E402
from .summary import (align_result, domain_expression, marker_genes, spot_summary,  # noqa: E402
                      to_inference_data, transfer_breaking_genes)

__all__ = [
    "EMSettings", "MCMCSettings", "SVISettings", "TransSTResult", "adjusted_rand_index", "compilation_cache",
    "align_labels", "fit_em", "fit_mcmc", "fit_svi", "load_result",
    "models", "normalized_mutual_info", "simulate", "__version__", "align_result",
    "domain_expression", "marker_genes", "spot_summary", "to_inference_data",
    "transfer_breaking_genes", "pl", "pp", "tl",
]


def __getattr__(name):
    """`transst_bayes.pl` imports matplotlib only when first used."""
    if name == "pl":
        import importlib

        return importlib.import_module(__name__ + ".pl")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    """The public API only (not the internal submodules that importing the package loads)."""
    return sorted(__all__)
