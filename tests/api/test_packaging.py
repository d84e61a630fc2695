"""`transst_bayes.models` must import after `pip install .` and `pip install -e .`, from the
repository root and from elsewhere, under `pytest` and `python -m pytest`, and no top-level
`models` module may land in site-packages. Each install goes into a throw-away virtual
environment that borrows this environment's dependencies through a .pth file."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _venv(tmp: Path) -> tuple[Path, Path]:
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    parents = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if os.path.isdir(p)]
    Path(purelib, "_parent_env.pth").write_text("\n".join(parents) + "\n")
    return py, Path(purelib)


def _install(tmp: Path, editable: bool) -> tuple[Path, Path]:
    py, purelib = _venv(tmp)
    cmd = [str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
    cmd += ["-e", str(REPO)] if editable else [str(REPO)]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return py, purelib


PROBE = textwrap.dedent(
    """
    import transst_bayes, transst_bayes.models as m, importlib.util, pathlib
    assert m.__name__ == "transst_bayes.models"
    assert pathlib.Path(m.__file__).parent.name in ("models",), m.__file__
    print(m.__file__)
    """
)

TEST_FILE = textwrap.dedent(
    """
    def test_models_importable():
        import transst_bayes.models as m
        assert m.__name__ == "transst_bayes.models"
    """
)


def _check_layout(py: Path, purelib: Path, tmp: Path) -> None:
    assert not (purelib / "models").exists(), "a top-level 'models' package was installed"
    assert not list(purelib.glob("models.py"))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "test_probe.py").write_text(TEST_FILE)
    for cwd in (REPO, elsewhere):
        r = subprocess.run([str(py), "-c", PROBE], cwd=cwd, capture_output=True, text=True)
        assert r.returncode == 0, (cwd, r.stderr[-2000:])
        r = subprocess.run([str(py), "-c", "import models"], cwd=elsewhere, capture_output=True, text=True)
        assert r.returncode != 0, "'import models' must not work outside the repository"
    for runner in ([str(py), "-m", "pytest"], [str(py), "-c", "import sys; sys.path.pop(0); import pytest; sys.exit(pytest.main())"]):
        r = subprocess.run(runner + ["-q", "-p", "no:cacheprovider", str(elsewhere / "test_probe.py")],
                           cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        r = subprocess.run(runner + ["-q", "-p", "no:cacheprovider", "test_probe.py"],
                           cwd=elsewhere, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_models_subpackage_after_install(tmp_path, editable):
    py, purelib = _install(tmp_path, editable)
    _check_layout(py, purelib, tmp_path)


def test_models_from_source_checkout():
    """Running from the repository root without installing (python -m puts the cwd first)."""
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-2000:]


def test_numpyro_has_an_upper_bound_that_the_installed_version_meets():
    """guides.py sets private attributes of NumPyro's autoguides: a new minor release may move
    them, so the requirement is capped, and the tested version must lie inside the cap."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name == "numpyro")
    assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), req
    assert req.specifier.contains(version("numpyro")), (str(req), version("numpyro"))
