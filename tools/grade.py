"""Autograde every submission and report (run by `make grade`).

Submissions go in ``submitted/<student>/<assignment>/<assignment>.ipynb``. For each assignment
that has submissions this script

1. registers the assignment's cells in ``gradebook.db`` (nbgrader needs them; the throwaway
   release goes to a temporary folder so ``notebooks/`` is never touched),
2. runs ``nbgrader autograde`` (hidden tests are restored from ``solutions/``; each cell may run
   for ``c.Execute.timeout`` seconds, see nbgrader_config.py),
3. writes per-student HTML feedback to ``feedback/<student>/<assignment>/``,

then writes ``grades.csv`` and prints a summary table. Run it again to regrade.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

COURSE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CellScore:
    """Score of one autograded (or manually graded) cell of one submission."""

    student: str
    assignment: str
    grade_id: str
    score: float
    max_score: float
    needs_manual_grade: bool


def nbgrader(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run an nbgrader command on the course at ``root`` with this interpreter's venv on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}",
               f"--CourseDirectory.db_url=sqlite:///{root / 'gradebook.db'}"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, env=env, timeout=timeout)


def submitted_assignments(root: Path) -> list[str]:
    """Assignments that at least one student has submitted."""
    return sorted({p.name for p in (root / "submitted").glob("*/*") if p.is_dir()})


def register_assignment(root: Path, assignment: str) -> None:
    """Put the assignment's graded cells into the gradebook without touching notebooks/."""
    with tempfile.TemporaryDirectory(prefix="saliencylab-grade-") as scratch:
        result = nbgrader(root, "generate_assignment", assignment, "--force",
                          f"--CourseDirectory.release_directory={scratch}")
    if result.returncode != 0:
        raise RuntimeError(f"cannot register {assignment} in the gradebook:\n{result.stderr[-3000:]}")


def autograde(root: Path, assignment: str) -> subprocess.CompletedProcess:
    """Autograde every submission of ``assignment`` (regrading those graded before)."""
    return nbgrader(root, "autograde", assignment, "--force", "--create")


def generate_feedback(root: Path, assignment: str) -> subprocess.CompletedProcess:
    """HTML feedback for every autograded submission of ``assignment``."""
    return nbgrader(root, "generate_feedback", assignment, "--force")


def cell_scores(root: Path) -> list[CellScore]:
    """Every graded cell of every autograded submission in the gradebook."""
    from nbgrader.api import Gradebook

    scores = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for assignment in gradebook.assignments:
            for submission in gradebook.assignment_submissions(assignment.name):
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        scores.append(CellScore(
                            student=submission.student_id, assignment=assignment.name,
                            grade_id=grade.name, score=float(grade.score),
                            max_score=float(grade.max_score), needs_manual_grade=bool(grade.needs_manual_grade),
                        ))
    return scores


def write_csv(scores: list[CellScore], path: Path) -> None:
    """One row per student and assignment: autograded score, maximum, cells still to grade by hand."""
    totals: dict[tuple[str, str], list[float]] = {}
    for s in scores:
        row = totals.setdefault((s.student, s.assignment), [0.0, 0.0, 0])
        row[0] += s.score
        row[1] += s.max_score
        row[2] += int(s.needs_manual_grade)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "assignment", "score", "max_score", "cells_to_grade_by_hand"])
        for (student, assignment), (score, max_score, manual) in sorted(totals.items()):
            writer.writerow([student, assignment, f"{score:g}", f"{max_score:g}", manual])


def main() -> int:
    root = COURSE_ROOT
    assignments = submitted_assignments(root)
    if not assignments:
        print("No submissions: put them in submitted/<student>/<assignment>/<assignment>.ipynb")
        return 1
    for assignment in assignments:
        print(f"grading {assignment} ...", flush=True)
        register_assignment(root, assignment)
        result = autograde(root, assignment)
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
        generate_feedback(root, assignment)
    scores = cell_scores(root)
    write_csv(scores, root / "grades.csv")
    print((root / "grades.csv").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
