"""The course's set-up files agree with each other and with this machine's constraints."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {str(Requirement(r)) for r in requirements}


def environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_lines = [re.sub(r"^\s*-\s*", "", line) for line in lines[start + 1 :] if line.strip().startswith("- ")]
    return {str(Requirement(r)) for r in pip_lines if not r.startswith("-e ")}


def test_environment_yml_matches_pyproject():
    in_pyproject, in_environment = pyproject_requirements(), environment_requirements()
    assert in_pyproject == in_environment, (
        f"only in lib/pyproject.toml: {sorted(in_pyproject - in_environment)}; "
        f"only in environment.yml: {sorted(in_environment - in_pyproject)}"
    )


def test_torch_pins_admit_this_machine_and_nothing_newer():
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject_requirements()}
    for name, here, newer in [("torch", "2.14.1", "2.15.0"), ("torchvision", "0.29.1", "0.30.0")]:
        assert Version(here) in requirements[name].specifier, f"{name} {here} must satisfy the pin"
        assert Version(newer) not in requirements[name].specifier, f"{name} must not require/allow {newer}"


def test_sqlalchemy_below_2_1_for_quiet_nbgrader():
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject_requirements()}
    assert Version("2.1.0") not in requirements["sqlalchemy"].specifier


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
