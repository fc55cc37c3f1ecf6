"""Generate the student release (notebooks/) from the instructor notebooks (solutions/).

nbgrader's ``generate_assignment --force`` deletes ``notebooks/<assignment>/`` before it
writes the new one, so a failure would leave students with nothing. Here every assignment is
generated in a temporary copy of the course first and only swapped in when that succeeded.
The lecture's metadata (slide types, RISE settings: tools/slides.py) is stripped from what
students get.

    python tools/release.py               # every assignment
    python tools/release.py 02_saliency   # just one
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

import slides

COURSE_ROOT = Path(__file__).resolve().parent.parent


def assignments() -> list[str]:
    """Assignment names (``NN_topic``) found in solutions/, in course order."""
    return sorted(p.parent.name for p in (COURSE_ROOT / "solutions").glob("*/*.ipynb") if p.stem == p.parent.name)


def venv_environment() -> dict[str, str]:
    """This environment with the running interpreter's bin/ first on PATH (nbgrader calls
    ``alembic`` and ``jupyter`` by name, which fails when the venv is not activated)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def generate(assignment: str, workdir: Path) -> Path:
    """Run nbgrader on a copy of ``solutions/<assignment>`` inside ``workdir``; return the
    generated folder. Raises ``RuntimeError`` with nbgrader's output when it fails."""
    shutil.copy(COURSE_ROOT / "nbgrader_config.py", workdir)
    shutil.copytree(
        COURSE_ROOT / "solutions" / assignment,
        workdir / "solutions" / assignment,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    command = [
        sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force",
        f"--CourseDirectory.root={workdir}", f"--CourseDirectory.db_url=sqlite:///{workdir}/gradebook.db",
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=venv_environment())
    generated = workdir / "notebooks" / assignment
    if result.returncode != 0 or not (generated / f"{assignment}.ipynb").exists():
        raise RuntimeError(f"nbgrader could not generate {assignment}:\n{result.stdout}\n{result.stderr}")
    for path in generated.glob("*.ipynb"):
        strip_lecture_metadata(path)
    return generated


def strip_lecture_metadata(path: Path) -> None:
    """Rewrite a generated notebook without what only the lecture uses (slide types, RISE
    settings), as nbformat writes it (nbgrader writes the same way)."""
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.write(slides.strip_lecture_metadata(notebook), str(path))


def release(assignment: str) -> None:
    """Regenerate ``notebooks/<assignment>``; the old release stays if generation fails."""
    with tempfile.TemporaryDirectory(prefix="saliencylab-release-") as tmp:
        generated = generate(assignment, Path(tmp))
        target = COURSE_ROOT / "notebooks" / assignment
        staging = target.with_name(f".{assignment}.new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(generated, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    print(f"released notebooks/{assignment}/")


def main(argv: list[str]) -> int:
    failed = []
    for assignment in argv or assignments():
        try:
            release(assignment)
        except RuntimeError as error:
            print(f"FAILED {assignment}: the previous release is kept.\n{error}", file=sys.stderr)
            failed.append(assignment)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
