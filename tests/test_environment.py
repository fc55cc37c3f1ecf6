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


def course_constraints() -> dict[str, Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {pin.name: pin for pin in pins}


def test_environment_yml_matches_pyproject_with_the_course_pins():
    pins = course_constraints()
    expected = {r for r in pyproject_requirements() if Requirement(r).name not in pins}
    expected |= {str(pin) for pin in pins.values()}
    in_environment = environment_requirements()
    assert expected == in_environment, (
        f"only in lib/pyproject.toml + constraints.txt: {sorted(expected - in_environment)}; "
        f"only in environment.yml: {sorted(in_environment - expected)}"
    )


def test_the_package_states_lower_bounds_only_so_colab_keeps_its_torch():
    # An upper bound makes `pip install saliencylab` replace a newer torch (Colab's CUDA build).
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject_requirements()}
    for name, oldest_supported, newer in [("torch", "2.2", "2.15.0"), ("torchvision", "0.17", "0.30.0")]:
        assert Version(oldest_supported) in requirements[name].specifier
        assert Version(newer) in requirements[name].specifier, f"{name} {newer} must be allowed"
        assert Version("99.0") in requirements[name].specifier, f"{name}: no upper bound in the package"


def test_course_pins_are_exact_and_satisfy_the_package():
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject_requirements()}
    pins = course_constraints()
    assert {"torch", "torchvision"} <= set(pins)
    for name, pin in pins.items():
        (exact,) = pin.specifier
        assert exact.operator == "==", f"constraints.txt pins {name} exactly"
        if name in requirements:  # the others (dask) come with a requirement (distributed)
            assert Version(exact.version) in requirements[name].specifier
    # The pair that installs offline on the course's machines (a mismatched pair fails to import).
    assert str(pins["torch"].specifier) == "==2.14.1" and str(pins["torchvision"].specifier) == "==0.29.1"


def test_make_installs_with_the_course_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt", makefile)


def test_sqlalchemy_below_2_1_for_quiet_nbgrader():
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject_requirements()}
    assert Version("2.1.0") not in requirements["sqlalchemy"].specifier


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
