"""Run the notebooks top to bottom at full size and store their outputs (tables, figures) in them,
so that they show their results where they are read (GitHub renders the stored outputs).

    pip install nbclient ipykernel
    TRANSST_DATA=/path/to/data python notebooks/execute.py [02_her2st_breast_cancer.ipynb ...]

Without names every notebook of this folder runs. The tests run the same code cells on small
settings and check that the stored outputs are complete (tests/api/test_notebooks.py).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _scrub(book) -> None:
    """Outputs name files relative to the repository (warnings print absolute paths)."""
    prefix = str(REPO) + os.sep
    for cell in book.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = out["text"].replace(prefix, "")
            for key, val in out.get("data", {}).items():
                if key.startswith("text/") and isinstance(val, str):
                    out["data"][key] = val.replace(prefix, "")


def execute(path: Path) -> float:
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "TRANSST_NOTEBOOK_SMALL"}
    t0 = time.perf_counter()
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env, MPLBACKEND="module://matplotlib_inline.backend_inline")
    try:
        NotebookClient(book, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    _scrub(book)
    nbformat.write(book, path)
    return time.perf_counter() - t0


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for p in paths:
        print(f"{p.name}: {execute(p):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
