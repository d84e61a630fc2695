"""benchmarks/README.md from the benchmarks' result files.

Each benchmark script, run over its whole protocol, saves its tables as one JSON file in
`benchmarks/results/` (`_common.publish`): the command that made them, the date, the commit,
the machine, the protocol and the tables (columns, rows, number formats). This module turns one
such file into its markdown section and puts it into benchmarks/README.md between the markers
`<!-- NAME:start -->` and `<!-- NAME:end -->` (added at the end of the document when absent), so
a rerun replaces its own section and no figure is copied by hand.

    python benchmarks/report.py            # rewrite every section from benchmarks/results/*.json
    python benchmarks/report.py --check    # exit 1 when a section differs from its result file
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCH_README = HERE / "README.md"


def cell(v, fmt: str | None) -> str:
    """One table cell: floats by `fmt` (default 3 decimals; NaN as "nan"), the rest as str."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        return (fmt or "{:.3f}").format(v)
    return str(v)


def table(t: dict) -> str:
    """Markdown of one table: {"columns": [...], "rows": [{...}], "fmt": {column: "{:.1f}"}}."""
    cols, fmt = t["columns"], t.get("fmt", {})
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in t["rows"]:
        out.append("| " + " | ".join(cell(r.get(c), fmt.get(c)) for c in cols) + " |")
    return "\n".join(out)


def render(result: dict) -> str:
    """The markdown section of one result file (markers included)."""
    rec = result["record"]
    parts = [f"### {result['title']}", result["protocol"],
             f"`{rec['command']}` ({rec['date']}, commit {rec['commit']}, {rec['machine']})"]
    for t in result["tables"]:
        if t.get("caption"):
            parts.append(t["caption"])
        parts.append(table(t))
    name = result["name"]
    return f"<!-- {name}:start -->\n" + "\n\n".join(parts) + f"\n<!-- {name}:end -->"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def put_section(text: str, result: dict) -> str:
    """`text` with the section of `result` replaced (or appended)."""
    start, end = markers(result["name"])
    block = render(result)
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def section_of(text: str, name: str) -> str | None:
    start, end = markers(name)
    if start not in text or end not in text:
        return None
    return text[text.index(start): text.index(end) + len(end)]


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_section(result: dict, readme: Path = BENCH_README) -> None:
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    readme.write_text(put_section(text, result))


def stale(readme: Path = BENCH_README, results: Path = RESULTS) -> list[str]:
    """Names of the result files whose section in `readme` is missing or differs from them."""
    text = readme.read_text()
    return [p.stem for p in sorted(results.glob("*.json")) if section_of(text, p.stem) != render(load(p))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only say which sections are out of date")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"benchmarks/README.md: section {name} differs from benchmarks/results/{name}.json")
        return 1 if bad else 0
    for p in sorted(RESULTS.glob("*.json")):
        write_section(load(p))
        print(f"wrote section {p.stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
