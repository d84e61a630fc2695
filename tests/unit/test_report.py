"""benchmarks/report.py: the tables of benchmarks/README.md are written from the benchmarks'
result files, and the document stays in step with them."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def _report():
    spec = importlib.util.spec_from_file_location("report", REPO / "benchmarks" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RESULT = {"name": "toy_data_x", "title": "Toy", "protocol": "Two rows.",
          "record": {"command": "python benchmarks/toy.py --data x", "date": "2026-12-03",
                     "commit": "abc1234", "machine": "2 CPU cores"},
          "tables": [{"caption": "ARI:", "columns": ["section", "ARI", "s"], "fmt": {"s": "{:.0f}"},
                      "rows": [{"section": "a", "ARI": 0.51234, "s": 12.4},
                               {"section": "mean", "ARI": float("nan")}]}]}


def test_a_result_file_becomes_its_section_and_a_rerun_replaces_it(tmp_path):
    report = _report()
    readme, results = tmp_path / "README.md", tmp_path / "results"
    results.mkdir()
    readme.write_text("# Benchmarks\n\nintro\n")
    (results / "toy_data_x.json").write_text(json.dumps(RESULT))
    assert report.stale(readme, results) == ["toy_data_x"]
    report.write_section(RESULT, readme)
    text = readme.read_text()
    assert "| a | 0.512 | 12 |" in text and "| mean | nan |  |" in text
    assert "`python benchmarks/toy.py --data x` (2026-12-03, commit abc1234, 2 CPU cores)" in text
    assert report.stale(readme, results) == []
    again = json.loads(json.dumps(RESULT))
    again["tables"][0]["rows"][0]["ARI"] = 0.7
    report.write_section(again, readme)
    text = readme.read_text()
    assert text.count("<!-- toy_data_x:start -->") == 1 and "| a | 0.700 | 12 |" in text
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert report.stale(readme, results) == ["toy_data_x"]  # the document no longer matches the file


def test_benchmarks_readme_matches_its_result_files():
    """Every table section of benchmarks/README.md is what `python benchmarks/report.py` writes from
    benchmarks/results/ (a number edited by hand, or a result file not written into the document,
    fails here), and every section marker has its result file."""
    report = _report()
    assert report.stale() == []
    text = report.BENCH_README.read_text()
    import re

    found = re.findall(r"<!-- (\S+):start -->", text)
    assert len(found) == len(set(found)), sorted({n for n in found if found.count(n) > 1})
    names = set(found)
    files = {p.stem for p in report.RESULTS.glob("*.json")}
    assert names == files, sorted(names ^ files)
