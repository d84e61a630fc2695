"""The notebooks in notebooks/: stored without outputs, and each runs top to bottom on small
settings (TRANSST_NOTEBOOK_SMALL=1): their code cells are executed in order, in one fresh Python
process, with a headless matplotlib backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, data_dir

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NEEDS_DATA = {"02_her2st_breast_cancer.ipynb"}


def test_the_four_notebooks_exist_without_outputs():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    for path in NOTEBOOKS:
        book = json.loads(path.read_text())
        for cell in book["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


def _script(path) -> str:
    cells = json.loads(path.read_text())["cells"]
    parts = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            assert not any(line.lstrip().startswith(("%", "!")) for line in src.splitlines()), \
                f"{path.name} cell {i}: IPython magics cannot run outside Jupyter"
            parts.append(f"# ---- cell {i}\n{src}\n")
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    if path.name in NEEDS_DATA and data_dir() is None:
        pytest.skip("real data folder absent (set TRANSST_DATA)")
    script = tmp_path / (path.stem + ".py")
    script.write_text(_script(path))
    env = dict(os.environ, TRANSST_NOTEBOOK_SMALL="1", MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(script)], cwd=REPO / "notebooks", env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{path.name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
