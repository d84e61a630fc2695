"""Shared helpers of the benchmark scripts: baselines, timing, tables, JSON output."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(f, *a, **kw):
    t = time.perf_counter()
    out = f(*a, **kw)
    return out, time.perf_counter() - t


def pca_scores(X: np.ndarray, q: int) -> np.ndarray:
    Xc = X - X.mean(0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    return U[:, :q] * s[:q]


def pca_kmeans(X, q, K, seed=0):
    from sklearn.cluster import KMeans

    return KMeans(K, n_init=10, random_state=seed).fit_predict(pca_scores(X, q))


def pca_gmm(X, q, K, seed=0):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(K, covariance_type="full", n_init=3, random_state=seed,
                           reg_covar=1e-4).fit(pca_scores(X, q)).predict(pca_scores(X, q))


def pca_tied_gmm_potts(X, q, K, graph, seed=0, beta=2.0):
    """A BayesSpace-like baseline without MCMC: a Gaussian mixture with one covariance shared by
    every cluster (BayesSpace's shared precision) on q principal components, then the package's
    ICM (`mrf.icm`, chromatic sweeps to convergence) under a Potts prior of fixed smoothness
    `beta` on the target's spot graph (`Prepared.graph`; BayesSpace's gamma, 2 its suggestion
    for ST arrays)."""
    import jax.numpy as jnp
    from sklearn.mixture import GaussianMixture

    from transst_bayes import mrf

    Z = pca_scores(X, q)
    gmm = GaussianMixture(K, covariance_type="tied", n_init=3, random_state=seed, reg_covar=1e-4).fit(Z)
    # log posterior = log weight + log density - a per-spot constant, which ICM's argmax never sees
    loglik = jnp.asarray(np.log(np.maximum(gmm.predict_proba(Z), 1e-300)), jnp.float32)
    g = mrf.on_device(graph)
    start = jnp.argmax(loglik, axis=1).astype(jnp.int32)
    return np.asarray(mrf.icm(start, loglik, g.nbr, g.mask, g.colors, g.n_colors, jnp.float32(beta)))


def label_transfer_potts(P: np.ndarray, graph, beta: float = 2.0, max_sweeps: int = 20) -> np.ndarray:
    """The classifier a user with labeled sections tries next: the label transfer's class
    probabilities P (n, C) smoothed by ICM under a Potts prior of fixed smoothness `beta`, on
    log P + beta * (number of neighbours labelled k) over the target's spot graph
    (`Prepared.graph`; 6 nearest spots by default), from the argmax, at most `max_sweeps`
    chromatic sweeps. Returns the class index per spot."""
    import jax.numpy as jnp

    from transst_bayes import mrf

    loglik = jnp.asarray(np.log(np.maximum(P, 1e-300)), jnp.float32)
    g = mrf.on_device(graph)
    start = jnp.argmax(loglik, axis=1).astype(jnp.int32)
    return np.asarray(mrf.icm(start, loglik, g.nbr, g.mask, g.colors, g.n_colors, jnp.float32(beta),
                              max_sweeps=max_sweeps))


def markdown_table(rows: list[dict], cols: list[str], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(fmt.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def mean_row(rows: list[dict]) -> dict:
    """The table row of the means over sections of every float column (None and NaN left out)."""
    mean = {"section": "mean"}
    for c, v in rows[0].items():
        if isinstance(v, float):
            mean[c] = float(np.nanmean([np.nan if r.get(c) is None else r[c] for r in rows]))
    return mean


def section_parser(doc: str):
    """The arguments every real-data benchmark takes: --data, --sections, --seed, --json."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("her2st", "seqfish", "dlpfc"), required=True)
    ap.add_argument("--sections", nargs="*", default=None, help="default: every section")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    return ap


def chosen_sections(args) -> list[str]:
    """The sections named by --sections, else every section of --data."""
    from real_data import dlpfc_sections, her2st_sections, seqfish_sections

    every = {"her2st": her2st_sections, "seqfish": seqfish_sections, "dlpfc": dlpfc_sections}
    return args.sections or every[args.data]()


BENCH_README = Path(__file__).resolve().parent / "README.md"


def run_record(command: str) -> dict:
    """Where and when a table was made: the command, the date, the commit (with "+changes" when
    the tree differs from it), the machine (CPU cores, JAX's devices) and the JAX version."""
    import os
    import platform
    import subprocess

    import jax

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=BENCH_README.parent, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", "transst_bayes", "models"):
        commit += "+changes"
    devices = sorted({d.device_kind for d in jax.devices()})
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else float("nan")
    return {"command": command, "date": time.strftime("%Y-%m-%d"), "commit": commit,
            "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, JAX {jax.__version__} on "
                       + ", ".join(devices) + f", load average {load:.1f}"}


def command_line(argv=None) -> str:
    """The benchmark's command as run, without its --json / --from-json file arguments."""
    argv = list(sys.argv if argv is None else argv)
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--json", "--from-json"):
            skip = True
            continue
        if a.startswith(("--json=", "--from-json=")):
            continue
        out.append(a)
    return " ".join(["python", "benchmarks/" + Path(argv[0]).name] + out)


def result_name(command: str) -> str:
    """The result file's (and README section's) name: the script and its arguments."""
    import re

    words = command.split()[1:]
    words[0] = Path(words[0]).stem
    return re.sub(r"[^A-Za-z0-9]+", "_", "_".join(w.lstrip("-") for w in words)).strip("_")


def table_spec(rows: list[dict], columns: list[str], fmt: dict | None = None, caption: str = "") -> dict:
    """One table of a result file (rows as JSON values: NumPy scalars made plain)."""
    def plain(v):
        if isinstance(v, np.generic):
            return v.item()
        return v

    return {"caption": caption, "columns": list(columns), "fmt": dict(fmt or {}),
            "rows": [{c: plain(r.get(c)) for c in columns if c in r} for r in rows]}


def publish(title: str, protocol: str, tables: list[dict], record: dict | None = None) -> Path:
    """Save a whole-protocol run's tables as benchmarks/results/NAME.json (NAME from the command
    line) and write its section of benchmarks/README.md (`report.py`). `record`: the saved run's
    `run_record` when the tables come from one (--from-json), else this run's."""
    import report

    record = record or run_record(command_line())
    name = result_name(record["command"])
    result = {"name": name, "title": title, "protocol": protocol, "record": record, "tables": tables}
    report.RESULTS.mkdir(exist_ok=True)
    path = report.RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float, allow_nan=True) + "\n")
    report.write_section(result)
    return path


def write_json(path, obj) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=2, default=float))


def standardised_pair(target, source, label_key, **data_options):
    """The package's own preprocessing (the matrices every method of a table shares)."""
    from transst_bayes.data import DataSettings, prepare

    return prepare(target, source, label_key, DataSettings(**data_options))


def label_transfer(prep, seed=0):
    """The baseline a user with labeled sections tries first: a multinomial logistic regression
    trained on the source's standardised expression, applied to the target. Returns (class
    names (C,), probabilities (n, C))."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=300, C=1.0, random_state=seed)
    clf.fit(prep.X_source, prep.source_labels)
    proba = np.zeros((prep.X.shape[0], len(prep.source_classes)))
    proba[:, clf.classes_] = clf.predict_proba(prep.X)
    return np.asarray(prep.source_classes, dtype=object), proba


def smooth_majority(labels, coords, k=6):
    """One pass of majority voting over each spot and its k nearest spots (ties: the spot's own)."""
    from scipy.spatial import cKDTree

    labels = np.asarray(labels)
    _, idx = cKDTree(coords).query(coords, k=k + 1)
    codes, inv = np.unique(labels, return_inverse=True)
    votes = np.zeros((labels.size, codes.size))
    np.add.at(votes, (np.repeat(np.arange(labels.size), k + 1), inv[idx].ravel()), 1.0)
    votes[np.arange(labels.size), inv] += 0.5
    return codes[np.argmax(votes, axis=1)]


def release_compiled_programs() -> None:
    """Drop JAX's compiled programs between sections: every compiled CPU program holds memory
    mappings, and a long run of fits grows past the kernel's vm.max_map_count (65,530), after
    which XLA's compiler crashes (seen in the test suite, about 5,000 mappings per test module)."""
    import jax

    jax.clear_caches()
