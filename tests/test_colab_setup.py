"""The first cell of every notebook installs saliencylab where it is missing (Colab) and does
nothing where it is installed.

The Colab case is reproduced without the network: a fresh venv outside the repository sees the
already-installed third-party packages (torch, ...) but not saliencylab, and the notebook's own
first cell installs saliencylab from a wheel (``SALIENCYLAB_PIP_SPEC``). The digits-CNN weights
are not beside it either, so the package's fallback (train and cache) runs too.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import nbtools  # noqa: E402

pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("colab-setup")]


def test_stamping_an_up_to_date_notebook_changes_nothing():
    # `make release` stamps every solution first; it must not wipe stored outputs or cell ids.
    for path in nbtools.solution_notebooks():
        notebook = nbformat.read(str(path), as_version=4)
        before = nbformat.writes(notebook)
        assert nbformat.writes(nbtools.stamp(notebook, path.stem)) == before, path.name


def test_setup_cell_is_first_code_cell_everywhere_and_names_the_repository_once():
    address = nbtools.course_config()["github"]
    for path in nbtools.solution_notebooks() + sorted((ROOT / "notebooks").glob("*/*.ipynb")):
        notebook = nbformat.read(str(path), as_version=4)
        first_code = next(c for c in notebook.cells if c.cell_type == "code")
        assert first_code.source == nbtools.colab_setup().source, f"{path}: run `make release`"
        assert "colab.research.google.com" in notebook.cells[1].source, f"{path}: no Colab badge"
    tracked = subprocess.run(["git", "grep", "-l", address, "--", ":!notebooks", ":!solutions", ":!tests"],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked in ([], ["course.toml"]), f"the repository address is written outside course.toml: {tracked}"


def test_setup_cell_does_nothing_where_saliencylab_is_installed():
    result = subprocess.run([sys.executable, "-c", nbtools.colab_setup().source],
                            capture_output=True, text=True, env={**os.environ, "SALIENCYLAB_PIP_SPEC": "/nonexistent"})
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_notebook_outside_the_repo_installs_saliencylab_by_its_first_cell(tmp_path):
    notebook_path = nbtools.solution_notebooks()[0]
    wheel_dir = tmp_path / "wheel"
    source = tmp_path / "lib"  # setuptools writes build/ into the tree it builds: not into ours
    shutil.copytree(ROOT / "lib", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(source)], check=True)
    wheel = next(wheel_dir.glob("saliencylab-*.whl"))

    venv = tmp_path / "fresh-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh_python = venv / "bin" / "python"
    fresh_site = subprocess.run([str(fresh_python), "-c", "import site; print(site.getsitepackages()[0])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    # Third-party packages (torch, jupyter, pip) stay visible, like Colab's preinstalled ones;
    # saliencylab's editable install is a .pth hook that a plain path entry does not run.
    (Path(fresh_site) / "course_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = subprocess.run([str(fresh_python), "-c", "import importlib.util as u; print(u.find_spec('saliencylab'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None", "saliencylab must not be importable before the cell runs"

    workdir = tmp_path / "elsewhere"
    shutil.copytree(notebook_path.parent, workdir)
    env = {**os.environ, "SALIENCYLAB_PIP_SPEC": str(wheel), "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "PYTHONNOUSERSITE": "1",
           "SALIENCYLAB_DATA": str(tmp_path / "no-data-here")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(fresh_python), "-m", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=600",
         "--output", "executed.ipynb", notebook_path.name],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    executed = nbformat.read(str(workdir / "executed.ipynb"), as_version=4)
    setup_output = "".join(o.get("text", "") for o in next(c for c in executed.cells if c.cell_type == "code").outputs)
    assert "Installing saliencylab from" in setup_output
    installed = subprocess.run([str(fresh_python), "-c", "import saliencylab; print(saliencylab.__file__)"],
                               capture_output=True, text=True, check=True).stdout
    assert str(venv) in installed, f"saliencylab should come from the fresh venv, got {installed}"
