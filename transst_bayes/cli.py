"""Command line `transst-bayes`: `demo` (simulate, fit, report, figures), `fit` (AnnData files
in, AnnData out), `simulate` (write a simulated source/target pair).

JAX's persistent compilation cache (`transst_bayes.cache`; `--no-cache` turns it off for the
run) makes a second run start fast.
Errors in the input end with a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import keys
from .cache import compilation_cache
from .files import probe_writable, replacing, write_text

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class InputError(Exception):
    """A problem with the user's files or options: printed as one line, exit code 2."""


def _timings(adata, key: str) -> dict:
    """Seconds per stage of the fit under `key` (`res.info["timings"]`)."""
    from .result import TransSTResult

    return dict(TransSTResult.from_anndata(adata, key).info.get("timings", {}))


def _timings_line(adata, key: str) -> str:
    t = _timings(adata, key)
    return "seconds by stage (first calls compile): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())


def _k_list(args) -> list[int] | int:
    if args.n_domains is not None and args.k_range is not None:
        raise InputError("give either --n-domains or --k-range, not both")
    if args.k_range is None:
        if args.n_domains is not None and args.n_domains < 2:
            raise InputError(f"--n-domains must be >= 2, got {args.n_domains}")
        return args.n_domains
    try:
        lo, hi = (int(v) for v in args.k_range.split(":"))
    except ValueError:
        raise InputError(f"--k-range must look like 2:10 (inclusive), got {args.k_range!r}") from None
    if lo < 2 or hi < lo:
        raise InputError(f"--k-range {args.k_range}: need 2 <= first <= last")
    return list(range(lo, hi + 1))


def _read(path: str, what: str):
    import anndata as ad

    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file {path} does not exist")
    try:
        return ad.read_h5ad(p)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(f"{what} file {path} is not a readable .h5ad file ({type(err).__name__}: {err})") from None


def _check_out_file(path: str, flag: str = "--out") -> Path:
    """An output file path that can be written, checked before any fit."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{flag} {path!r} is a directory; give a file name such as {str(out / 'fit.h5ad')!r}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{flag} {path!r}: the folder {str(parent)!r} does not exist; create it first")
    # a test write, not os.access: a read-only mount or a full quota pass the permission bits
    why = probe_writable(parent)
    if why is None and out.exists() and not os.access(out, os.W_OK):
        why = "the file is read-only"
    if why is not None:
        raise InputError(f"{flag} {path!r} cannot be written ({why}); choose another path")
    return out


def _check_out_dir(path: str, flag: str = "--out") -> Path:
    """An output folder that exists and is writable or can be created, checked before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {path!r} is a file, not a folder; give a folder name")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    why = probe_writable(probe)
    if why is not None:
        raise InputError(f"{flag} {path!r} cannot be written ({why}); choose another folder")
    return out


def _write_h5ad(adata, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    import gc

    import io
    from contextlib import redirect_stderr

    failed, noise = None, io.StringIO()
    # h5py prints a traceback for each handle that fails to close after a failed write
    with redirect_stderr(noise):
        try:
            with replacing(path) as tmp:  # a failed or interrupted write leaves an earlier file whole
                adata.write_h5ad(tmp)
        except (OSError, RuntimeError) as err:  # h5py reports a full disk as a RuntimeError
            failed = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        finally:
            gc.collect()  # the failed handles (held by the error's frames) are released here
    if failed is None and noise.getvalue():
        sys.stderr.write(noise.getvalue())  # a successful write's own messages are shown
    if failed is not None:
        raise OSError(f"could not write {path} ({failed}); any earlier file there is unchanged")


def _print_k_table(k_table: list) -> None:
    cols = [c for c in ("K", "n_novel", "loglik", "sbic", "bic", "mbic", "hbic", "icl", "elpd_loo", "elpd_waic", "beta",
                        "kappa", "chosen")
            if c in k_table[0]]
    print(" | ".join(f"{c:>10}" for c in cols))
    for row in k_table:
        print(" | ".join(_cell(c, row[c]) for c in cols))


def _cell(column: str, value) -> str:
    """Criteria to 0.1; beta and kappa (small scales) to 3 significant digits."""
    if not isinstance(value, float):
        return f"{str(value):>10}"
    return f"{value:>10.3g}" if column in ("beta", "kappa") else f"{value:>10.1f}"


def _figures(adata, folder: Path, reference: str | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import pl

    folder.mkdir(parents=True, exist_ok=True)
    if reference is not None:  # one colour per domain in every figure, matched to the reference
        pl.match_colors(adata, reference)
    plots = {
        "domains": lambda: pl.domains(adata, reference=reference),
        "uncertainty": lambda: pl.uncertainty(adata, which="maxprob"),
        "markers": lambda: pl.marker_heatmap(adata, n_top=5),
        "k_selection": lambda: pl.k_selection(adata),
        "embedding": lambda: pl.embedding(adata, basis="pca"),
    }
    if keys.transfer_breaking(keys.DEFAULT) in adata.uns:
        plots["transfer_breaking"] = lambda: pl.transfer_breaking(adata, n_top=20)
    out = []
    for name, draw in plots.items():
        ax = draw()
        fig = (ax[0] if isinstance(ax, (list, tuple)) else ax).figure
        with replacing(folder / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        out.append(folder / f"{name}.png")
    return out


def _summaries(adata, folder: Path) -> None:
    """k_table.tsv and markers.tsv (top 10 genes per domain) beside the .h5ad."""
    import pandas as pd

    k_table = pd.DataFrame(json.loads(adata.uns[keys.DEFAULT]["k_table"]))
    write_text(folder / "k_table.tsv", k_table.to_csv(sep="\t", index=False))
    m = adata.uns[keys.markers(keys.DEFAULT)]
    write_text(folder / "markers.tsv", m.groupby("domain", sort=True).head(10).to_csv(sep="\t", index=False))


# ------------------------------------------------------------------------------------- demo
def _demo(args) -> int:
    import numpy as np

    from . import tl
    from .metrics import adjusted_rand_index
    from .simulate import simulate

    if args.size < 4:
        raise InputError(f"--size must be >= 4, got {args.size}")
    if not 2 <= args.k_min <= args.k_max:
        raise InputError(f"--k-min and --k-max must satisfy 2 <= k-min <= k-max, got {args.k_min}, {args.k_max}")
    out = _check_out_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source, target = simulate(args.seed, height=args.size, width=args.size)
    target.uns.pop("simulation", None)
    t1 = time.perf_counter()
    ks = list(range(args.k_min, args.k_max + 1))
    tl.transst(target, source, label_key="label", n_domains=ks, n_factors=10, rng=args.seed,
               progress_bar=not args.quiet)
    tl.markers(target)
    tl.transfer_breaking_genes(target)
    t2 = time.perf_counter()
    uns = target.uns[keys.DEFAULT]
    labels = target.obs[keys.DEFAULT].astype(str).to_numpy()
    ari = adjusted_rand_index(labels, target.obs["truth"].astype(str).to_numpy())
    k_table = json.loads(uns["k_table"])
    print(f"simulated {target.n_obs} target spots, {source.n_obs} source spots, "
          f"{target.n_vars} genes ({t1 - t0:.1f} s)")
    print(f"fit over K = {ks[0]}..{ks[-1]} in {t2 - t1:.1f} s: chosen K = {uns['n_domains']}, "
          f"ARI vs truth = {ari:.3f}, beta = {uns['beta']:.2f}, tau = {uns['tau']:.4f}, "
          f"kappa = {uns['kappa']:.4g}")
    print(_timings_line(target, keys.DEFAULT))
    _print_k_table(k_table)
    _write_h5ad(target, out / "demo_target.h5ad")
    _summaries(target, out)
    figs = _figures(target, out / "figures", reference="truth")
    summary = {"ari": ari, "chosen_K": int(uns["n_domains"]), "beta": float(uns["beta"]),
               "tau": float(uns["tau"]), "kappa": float(uns["kappa"]),
               "domains": list(map(str, uns["domain_names"])), "seconds_fit": t2 - t1, "k_table": k_table,
               "mean_maxprob": float(np.mean(target.obs[keys.maxprob(keys.DEFAULT)])),
               "timings": _timings(target, keys.DEFAULT), "seconds_total": time.perf_counter() - t0}
    write_text(out / "demo_summary.json", json.dumps(summary, indent=2, default=float))
    print(f"wrote {out / 'demo_target.h5ad'}, {out / 'demo_summary.json'}, k_table.tsv, "
          f"markers.tsv and {len(figs)} figures in {out / 'figures'} "
          f"({time.perf_counter() - t0:.1f} s in all)")
    return 0


# -------------------------------------------------------------------------------------- fit
def _fit(args) -> int:
    from . import tl

    out = _check_out_file(args.out)
    ks = _k_list(args)
    target = _read(args.target, "--target")
    source = _read(args.source, "--source") if args.source else None
    if source is not None and args.label_key not in source.obs:
        raise InputError(f"--label-key {args.label_key!r} is not a column of the source's obs; "
                         f"columns are {list(source.obs.columns)}")
    if args.layer is not None and args.layer not in target.layers:
        raise InputError(f"--layer {args.layer!r} is not a layer of the target; layers are "
                         f"{list(target.layers.keys())}")
    if (args.spatial_key not in target.obsm and "spatial_connectivities" not in target.obsp
            and args.graph in ("knn", "radius")):
        raise InputError(f"--spatial-key {args.spatial_key!r} is not in the target's obsm "
                         f"(keys: {list(target.obsm.keys())}); give the key of the coordinates")
    opts = _fit_options(args, source)
    t0 = time.perf_counter()
    tl.transst(target, source, label_key=args.label_key, n_domains=ks, method=args.method,
               spatial_key=args.spatial_key, library_key=args.library_key, layer=args.layer,
               rng=args.seed, key_added=args.key_added, **opts)
    tl.markers(target, key=args.key_added)
    used_source = _used_source(target, args.key_added)
    if used_source:  # a fit that set the source aside (transfer "none") has no source loadings
        tl.transfer_breaking_genes(target, key=args.key_added)
    secs = time.perf_counter() - t0
    uns = target.uns[args.key_added]
    _write_h5ad(target, out)
    counts = target.obs[args.key_added].value_counts().sort_index()
    print(f"fitted {target.n_obs} spots ({args.method}) in {secs:.1f} s: K = {uns['n_domains']}, "
          f"beta = {uns['beta']:.2f}, tau = {uns['tau']:.4g}, kappa = {uns['kappa']:.4g}, mean max probability = "
          f"{target.obs[args.key_added + '_maxprob'].mean():.3f} (temperature {uns['temperature']:.3g}; "
          f"calibration: {uns['calibration']})")
    print(_transfer_line(uns))
    if source is not None and not used_source:
        print("transfer-breaking genes: none computed (the fit did not use the source; "
              "--transfer eb uses it anyway)")
    print("spots per domain: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    print(_timings_line(target, args.key_added))
    _print_k_table(json.loads(uns["k_table"]))
    print(f"wrote {out} (obs['{args.key_added}'], uns['{args.key_added}_markers'], ...)")
    return 0


def _calibrate(value: str):
    """--calibrate: "auto", "none" or a temperature > 0."""
    if value in ("auto", "none"):
        return value
    try:
        T = float(value)
    except ValueError:
        T = float("nan")
    if not T > 0 or T == float("inf"):
        raise InputError(f"--calibrate must be auto, none or a temperature > 0, got {value!r}")
    return T


def _fit_options(args, source) -> dict:
    """fit_em / fit_svi keyword arguments from the `fit` options (None: the function's default)."""
    if source is None and args.transfer not in (None, "none"):
        raise InputError(f"--transfer {args.transfer} needs a labeled --source")
    if args.method != "svi" and args.guide is not None:
        raise InputError("--guide is an option of --method svi")
    opts = dict(n_factors=args.n_factors, graph=args.graph, progress_bar=not args.quiet,
                calibrate=_calibrate(args.calibrate), domains=args.domains)
    named = dict(n_genes=args.n_genes, criterion=args.criterion, source_batch_key=args.source_batch_key,
                 n_restarts=args.n_restarts, guide=args.guide, dtype=args.dtype)
    opts.update({k: v for k, v in named.items() if v is not None})
    if args.transfer is not None:
        if args.method == "svi":
            opts["em_options"] = {"transfer": args.transfer}
        else:
            opts["transfer"] = args.transfer
    if args.classifier is not None:
        if source is None:
            raise InputError("--classifier needs a labeled --source")
        if args.method == "svi":
            opts.setdefault("em_options", {})["classifier"] = args.classifier
        else:
            opts["classifier"] = args.classifier
    if args.method == "svi" and "n_restarts" in opts:
        opts.setdefault("em_options", {})["n_restarts"] = opts.pop("n_restarts")
    return opts


def _used_source(adata, key: str) -> bool:
    """Whether the fit under `key` used the source (transfer mode other than "none")."""
    return json.loads(str(adata.uns[key]["settings"])).get("transfer_used", "none") != "none"


def _transfer_line(uns) -> str:
    """How the source was used: the transfer mode, and transfer="auto"'s held-out evidence."""
    used = json.loads(str(uns["settings"])).get("transfer_used", "none")
    choice = json.loads(str(uns["meta"])).get("info", {}).get("transfer_choice", {})
    ari = choice.get("held_out_ari")
    why = (f" (chosen on {choice['n_sections']} held-out source sections: mean ARI {ari['eb']:.3f} with the "
           f"source, {ari['none']:.3f} without)") if ari else ""
    return f"transfer: {used}{why}"


# --------------------------------------------------------------------------------- simulate
def _simulate(args) -> int:
    from .simulate import simulate

    for flag, v, lo in (("--size", args.size, 2), ("--genes", args.genes, 2), ("--factors", args.factors, 1),
                        ("--domains", args.domains, 2)):
        if v < lo:
            raise InputError(f"{flag} must be >= {lo}, got {v}")
    if args.factors >= args.genes:
        raise InputError(f"--factors ({args.factors}) must be smaller than --genes ({args.genes})")
    out = _check_out_dir(args.out)
    source, target = simulate(args.seed, height=args.size, width=args.size, n_genes=args.genes,
                              n_factors=args.factors, n_domains=args.domains, shift=args.shift,
                              error=args.error)
    target.uns.pop("simulation", None)
    out.mkdir(parents=True, exist_ok=True)
    _write_h5ad(source, out / "source.h5ad")
    _write_h5ad(target, out / "target.h5ad")
    print(f"wrote {out / 'source.h5ad'} ({source.n_obs} spots, labels in obs['label']) and "
          f"{out / 'target.h5ad'} ({target.n_obs} spots, truth in obs['truth'])")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transst-bayes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cache", action="store_true", help="do not use JAX's compilation cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulate a source/target pair, fit, print ARI and the K table, "
                                    "write figures, a result .h5ad and summary tables")
    d.add_argument("--out", default="transst_demo", help="output folder (default: transst_demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=50, help="lattice side (default 50: 2,500 spots)")
    d.add_argument("--k-min", type=int, default=3)
    d.add_argument("--k-max", type=int, default=5)
    d.set_defaults(func=_demo)

    f = sub.add_parser("fit", help="fit TransST to a target .h5ad with a labeled source .h5ad")
    f.add_argument("--target", required=True, help="target AnnData (.h5ad)")
    f.add_argument("--source", default=None, help="labeled source AnnData (.h5ad); omit for no transfer")
    f.add_argument("--label-key", default="label", help="source obs column with the labels")
    f.add_argument("--n-domains", type=int, default=None, help="number of domains K (default 7)")
    f.add_argument("--k-range", default=None, help="K range to choose from, inclusive, e.g. 2:10")
    f.add_argument("--method", choices=("em", "svi"), default="em")
    f.add_argument("--layer", default=None, help="target layer with the expression (default X)")
    f.add_argument("--spatial-key", default="spatial", help="obsm key of the coordinates")
    f.add_argument("--library-key", default=None, help="obs column naming the sections")
    f.add_argument("--graph", choices=("knn", "visium", "st", "radius"), default="knn")
    f.add_argument("--n-factors", type=int, default=15)
    f.add_argument("--n-genes", type=int, default=None, help="genes to select (default 2,000)")
    f.add_argument("--transfer", choices=("auto", "eb", "cv", "none"), default=None,
                   help="use of the source: auto (default: chosen on held-out source sections), eb "
                        "(always, tau learned), cv (the published lambda grid), none")
    f.add_argument("--calibrate", default="auto",
                   help="auto (default: temperature from held-out source sections), none, or a temperature")
    f.add_argument("--source-batch-key", default=None,
                   help="source obs column naming its sections (held-out fits for --transfer auto and "
                        "--calibrate auto; default: library_id, section, sample or batch)")
    f.add_argument("--domains", choices=("anchored", "free"), default="anchored",
                   help="anchored (default): domains tied to and named after source classes; free")
    f.add_argument("--criterion", default=None, choices=("hbic", "sbic", "bic", "mbic", "icl", "loo", "waic"),
                   help="choice of K among --k-range (default: hbic for em, loo for svi)")
    f.add_argument("--n-restarts", type=int, default=None, help="EM restarts (default 3)")
    f.add_argument("--guide", choices=("normal", "lowrank", "delta"), default=None,
                   help="SVI guide (--method svi; default normal)")
    f.add_argument("--dtype", choices=("float32", "float64"), default=None)
    f.add_argument("--classifier", type=float, default=None,
                   help="weight of the source classifier's term beside each anchored domain's Gaussian "
                        "(default 1; 0: the Gaussians alone)")
    f.add_argument("--key-added", default=keys.DEFAULT)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True, help="output .h5ad")
    f.set_defaults(func=_fit)

    s = sub.add_parser("simulate", help="write a simulated source/target pair as .h5ad files")
    s.add_argument("--out", default="transst_sim", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=50)
    s.add_argument("--genes", type=int, default=1000)
    s.add_argument("--factors", type=int, default=10)
    s.add_argument("--domains", type=int, default=4)
    s.add_argument("--shift", default="none", help="none | small | large | a number")
    s.add_argument("--error", type=float, default=1.0, help="target noise upper bound")
    s.set_defaults(func=_simulate)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        compilation_cache(not args.no_cache)
        if getattr(args, "shift", None) not in (None, "none", "small", "large"):
            try:
                args.shift = float(args.shift)
            except ValueError:
                raise InputError(f"--shift must be none, small, large or a number, got {args.shift!r}") from None
        return args.func(args)
    except (InputError, ValueError, TypeError) as err:
        print(f"transst-bayes {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # a write that failed (disk full): the message names the file
        print(f"transst-bayes {args.command}: error: {err}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except KeyboardInterrupt:  # outputs are written atomically (files.py): nothing partial is left
        print(f"transst-bayes {args.command}: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED


def console() -> None:
    """The `transst-bayes` program: `main`, then exit with its status. After Ctrl-C the process
    ends at once (os._exit) rather than through the interpreter's shutdown, which can crash
    while JAX's compiler threads are still running."""
    import signal

    def interrupted(signum, frame):
        # at once, not by raising KeyboardInterrupt: raised inside a garbage-collector callback
        # (JAX registers one) it is printed and ignored, and the fit went on. Outputs are
        # written atomically, so the previous files are intact (files.py)
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        sys.stderr.write(f"transst-bayes {command}: interrupted; no output written\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, interrupted)
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
