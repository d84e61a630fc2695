"""The user-facing documents stay user-facing and stay true to the code.

* README.md, benchmarks/README.md, CHANGELOG.md, the notebooks and the docstrings and comments
  of the package carry no development-process text (run labels, issue numbers, "not kept",
  dated history); the scanner is shown to fail on the README of the previous commit.
* README's blocks marked `<!-- test: quickstart -->` run as written; its options tables match
  the functions' signatures; its command lines parse with the CLI's own parser; its links into
  other documents point at files and headings that exist.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
import shlex
import subprocess
import tokenize
from dataclasses import fields
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# (what, pattern): development-process text that a user-facing document must not carry
PROCESS = [
    ("run label", re.compile(r'\b(session|run)\s+"[a-z]"', re.I)),
    ("run label", re.compile(r'\bsession\s+[a-z]\b(?!-)', re.I)),
    ("session reference", re.compile(r"\b(this|that|an earlier|earlier|the previous|previous|next) session\b", re.I)),
    ("issue number", re.compile(r"\bissues?\s+#?\d+", re.I)),
    ("issue number", re.compile(r"(?<![\w&/])#\d{1,4}\b")),
    ("not kept", re.compile(r"\bnot kept\b", re.I)),
    ("dated history", re.compile(r"\bBefore 2026-", re.I)),
    ("scratch script", re.compile(r"\bscratch (script|analysis)", re.I)),
]
# developer-facing documents (they may say what was not kept) still carry no run labels or issue numbers
LABELS = [p for p in PROCESS if p[0] in ("run label", "session reference", "issue number")]


def scan_text(text: str, where: str, patterns=PROCESS, first_line: int = 1) -> list[str]:
    """'where:line: what: match' for each hit of `patterns` in `text`."""
    hits = []
    for i, line in enumerate(text.splitlines(), start=first_line):
        for what, pat in patterns:
            for m in pat.finditer(line):
                hits.append(f"{where}:{i}: {what}: {m.group(0)!r}")
    return hits


def _python_prose(path: Path) -> list[tuple[int, str]]:
    """(first line, text) of every docstring and comment of a Python file."""
    src = path.read_text()
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.append((body[0].lineno, body[0].value.value))
    return out


def _notebook_cells(path: Path) -> list[tuple[int, str]]:
    """(cell number, source) of every markdown and code cell of a notebook."""
    cells = json.loads(path.read_text())["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] in ("markdown", "code")]


def process_hits() -> list[str]:
    hits = []
    for name in ("README.md", "benchmarks/README.md", "CHANGELOG.md"):
        path = REPO / name
        if path.exists():
            hits += scan_text(path.read_text(), name)
    for name in ("CONTRIBUTING.md", "benchmarks/EXPERIMENTS.md"):
        path = REPO / name
        if path.exists():
            hits += scan_text(path.read_text(), name, LABELS)
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell, text in _notebook_cells(path):
            hits += scan_text(text, f"{path.relative_to(REPO)} cell {cell}, line")
    for folder in ("transst_bayes", "models"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, text in _python_prose(path):
                hits += scan_text(text, str(path.relative_to(REPO)), first_line=line)
    return hits


def test_documents_carry_no_development_process_text():
    hits = process_hits()
    assert not hits, "development-process text in user-facing documents:\n" + "\n".join(hits)


def test_the_scanner_finds_what_it_looks_for():
    sample = 'rerun in session "h" (issue 11), tried in session k and not kept; Before 2026-11-27 it was'
    found = {h.split(": ")[1] for h in scan_text(sample, "sample")}
    assert found >= {"run label", "issue number", "not kept", "dated history"}
    assert not scan_text("A session of work; the sessions list; 12 issues; the run of the test.", "clean")


# the last commit whose README read as a lab notebook (before it was split into documents)
NOTEBOOK_README_COMMIT = "b5dd4e5"


def test_the_scanner_fails_on_the_notebook_style_readme():
    """The check must fail on the README that mixed the user guide with development history."""
    try:
        old = subprocess.run(["git", "show", f"{NOTEBOOK_README_COMMIT}:README.md"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here")
    hits = scan_text(old, f"README.md@{NOTEBOOK_README_COMMIT}")
    kinds = {h.split(": ")[1] for h in hits}
    assert len(hits) > 20 and kinds >= {"run label", "issue number", "not kept", "dated history"}, hits


# --- README's code ------------------------------------------------------------------------------

def _marked_blocks(text: str, mark: str) -> list[str]:
    """The fenced code blocks right after a `<!-- test: mark -->` line."""
    pat = re.compile(r"<!-- test: " + re.escape(mark) + r" -->\s*\n```\w*\n(.*?)\n```", re.S)
    return pat.findall(text)


def _marked_table(text: str, mark: str) -> list[list[str]]:
    m = re.search(r"<!-- test: " + re.escape(mark) + r" -->\s*\n((?:\|.*\|\n)+)", text)
    assert m, f"no table marked {mark} in README"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(1).splitlines()]
    return rows[2:]  # header and rule


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = _marked_blocks(README.read_text(), "quickstart")
    assert len(blocks) >= 2
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "README.md quickstart", "exec"), ns)
    plt.close("all")
    assert (tmp_path / "fit.npz").exists() and (tmp_path / "domains.h5ad").exists()
    target = ns["target"]
    assert "transst" in target.obs and "transst_markers" in target.uns
    assert len(set(ns["res"].labels)) >= 2


def _default(name: str, params: dict, data_defaults: dict):
    if name in params:
        return params[name].default
    assert name in data_defaults, f"{name} is neither an argument nor a data option"
    return data_defaults[name]


def test_readme_options_table_matches_the_signatures():
    import transst_bayes as tb
    from transst_bayes.data import DataSettings
    from transst_bayes.settings import EMSettings

    data = {f.name: f.default for f in fields(DataSettings)}
    em_fields = {f.name for f in fields(EMSettings)}
    rows = _marked_table(README.read_text(), "options")
    assert len(rows) >= 20
    for row in rows:
        name = row[0].strip("`")
        for fn, cell in ((tb.fit_em, row[1]), (tb.fit_svi, row[2])):
            params = inspect.signature(fn).parameters
            if cell == "—":
                assert name not in params and name not in data, (fn.__name__, name)
            elif cell == "em_options":
                assert name not in params and name in em_fields, (fn.__name__, name)
            else:
                assert _default(name, params, data) == ast.literal_eval(cell.strip("`")), (fn.__name__, name, cell)


def test_readme_tl_options_table_matches_the_signature():
    from transst_bayes import tl

    params = inspect.signature(tl.transst).parameters
    for row in _marked_table(README.read_text(), "tl-options"):
        name = row[0].strip("`")
        assert params[name].default == ast.literal_eval(row[1].strip("`")), name


def _readme_commands() -> list[list[str]]:
    """Every `transst-bayes ...` command line of README's bash blocks, as argv after the program."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "transst-bayes":
                    cmds.append(words[1:])
    return cmds


def test_readme_command_lines_parse_and_simulate_runs(tmp_path, monkeypatch):
    from transst_bayes import cli

    cmds = _readme_commands()
    assert {c[0] for c in cmds} >= {"demo", "simulate", "fit"}
    parser = cli._parser()
    for argv in cmds:
        parser.parse_args(argv)  # SystemExit on an unknown option
    fit = parser._subparsers._group_actions[0].choices["fit"]
    known = {s for a in fit._actions for s in a.option_strings}
    section = README.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    mentioned = set(re.findall(r"`(--[a-z-]+)", section.split("`demo` writes")[0]))
    assert mentioned and mentioned <= known, mentioned - known
    monkeypatch.chdir(tmp_path)
    simulate = next(c for c in cmds if c[0] == "simulate")
    assert cli.main(["--quiet", "--no-cache"] + simulate) == 0
    assert (tmp_path / "sim" / "source.h5ad").exists() and (tmp_path / "sim" / "target.h5ad").exists()


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_readme_links_point_at_files_and_headings_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", README.read_text())
    assert links
    for path, anchor in links:
        if path.startswith("http"):
            continue
        target = REPO / path
        assert target.exists(), path
        if anchor:
            headings = re.findall(r"^#+\s+(.*)$", target.read_text(), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{path}#{anchor}"


def test_readme_stays_short():
    n = len(README.read_text().splitlines())
    assert 150 <= n <= 330, n
