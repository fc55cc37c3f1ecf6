"""The first cell of every notebook installs saliencylab where it is missing (Colab) and does
nothing where it is installed.

The Colab case is reproduced without the network: a fresh venv outside the repository sees the
already-installed third-party packages (torch, ...) but not saliencylab, and the notebook's own
first cell installs saliencylab from a wheel (``SALIENCYLAB_PIP_SPEC``), whose digits-CNN weights
are the course's own (shipped inside the package, so Colab gets the same model).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the saliencylab package, built from a copy of lib/."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "lib"  # setuptools writes build/ into the tree it builds: not into ours
    shutil.copytree(ROOT / "lib", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True)
    return next((tmp_path / "dist").glob("saliencylab-*.whl"))


def test_the_wheel_carries_the_trained_digits_weights(wheel):
    # A pip install (Colab) must use the very model the stored notebook outputs were made with,
    # not one retrained on another CPU (other weights, other numbers).
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"saliencylab/data/digits_cnn.pt", "saliencylab/data/digits_cnn.json"} <= names


def fresh_venv(venv: Path) -> tuple[Path, Path]:
    """A venv without pip or saliencylab. Returns (its python, its site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh_python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(fresh_python), "-c", "import site; print(site.getsitepackages()[0])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    return fresh_python, fresh_site


def fresh_venv_seeing_course_packages(venv: Path) -> tuple[Path, Path]:
    """A fresh venv in which the course venv's third-party packages (torch, jupyter, pip) stay
    visible, like Colab's preinstalled ones. Returns (python, site-packages)."""
    fresh_python, fresh_site = fresh_venv(venv)
    # saliencylab's editable install is a .pth hook that a plain path entry does not run.
    (fresh_site / "course_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return fresh_python, fresh_site


def fake_distribution(site_packages: Path, name: str, version: str) -> None:
    """Metadata of an installed distribution, enough for pip's resolver (no code)."""
    info = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def test_installing_the_package_keeps_a_newer_torch_in_place(wheel, tmp_path):
    # Colab ships its own (newer, CUDA) torch; the setup cell must not replace it. A venv whose
    # only "installed" packages are metadata (a newer torch and torchvision, every other
    # dependency at this venv's version) is enough to see pip's decision, offline.
    fresh_python, fresh_site = fresh_venv(tmp_path / "colab-like")
    newer = {"torch": "2.99.0", "torchvision": "0.99.0"}
    for requirement in map(Requirement, importlib.metadata.requires("saliencylab")):
        if requirement.marker is None:  # not an extra
            fake_distribution(fresh_site, requirement.name,
                              newer.get(requirement.name) or importlib.metadata.version(requirement.name))
    # os.devnull: none of this machine's pip configuration (it caps torch at the version on its disk).
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh_python), "install", "--dry-run", "--no-index",
         "--find-links", str(wheel.parent), "--report", str(report), "saliencylab"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    to_install = {item["metadata"]["name"]: item["metadata"]["version"]
                  for item in json.loads(report.read_text())["install"]}
    assert to_install == {"saliencylab": "0.1.0"}, f"pip would also install {to_install}"


def test_notebook_outside_the_repo_installs_saliencylab_by_its_first_cell(wheel, tmp_path):
    notebook_path = nbtools.solution_notebooks()[0]
    fresh_python, _ = fresh_venv_seeing_course_packages(tmp_path / "fresh-venv")
    venv = tmp_path / "fresh-venv"
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
