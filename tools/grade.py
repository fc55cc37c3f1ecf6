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
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

import audit
import sandbox

COURSE_ROOT = Path(__file__).resolve().parent.parent
SANDBOX_OFF_REASON = sandbox.unavailable_reason()


@dataclass(frozen=True)
class CellScore:
    """Score of one autograded (or manually graded) cell of one submission."""

    student: str
    assignment: str
    grade_id: str
    score: float
    max_score: float
    needs_manual_grade: bool


def nbgrader(root: Path, *args: str, timeout: float | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run an nbgrader command on the course at ``root`` with this interpreter's venv on PATH
    (``env``: extra environment variables)."""
    env = {**os.environ, **(env or {})}
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


@dataclass
class SubmissionResult:
    """How one student's submission of one assignment went."""

    student: str
    assignment: str
    status: str  # "graded", "tampering" (graded, flagged), or what went wrong, e.g. "missing notebook"
    detail: str = ""

    @property
    def graded(self) -> bool:
        return self.status in ("graded", "tampering")


def notebook_problem(path: Path) -> tuple[str, str] | None:
    """Why the submitted notebook at ``path`` cannot be graded, or None when it can."""
    if not path.exists():
        others = sorted(p.name for p in path.parent.glob("*.ipynb"))
        found = f"; found {others}: rename it to {path.name}" if others else ""
        return "missing notebook", f"no {path.name} in {path.parent}{found}"
    try:
        nbformat.read(str(path), as_version=4)
    except Exception as error:  # nbformat raises several kinds for broken files
        return "invalid notebook", f"{path.name} is not a valid notebook ({type(error).__name__}: {str(error)[:200]})"
    return None


def restore_deleted_test_cells(submission: Path, source: Path) -> list[str]:
    """Put back the locked cells (tests, setup) a student deleted, from the source notebook.

    nbgrader overwrites edited locked cells with the source version but scores a deleted test
    cell as 0 without running it; restoring it means the real tests are always the ones run.
    ``submission`` is the grader's scratch copy (the student's file is never modified).
    Returns the restored ids.
    """
    source_cells = nbformat.read(str(source), as_version=4).cells
    notebook = nbformat.read(str(submission), as_version=4)
    present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in notebook.cells}
    restored = []
    for index, cell in enumerate(source_cells):
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("locked") or meta.get("grade_id") in present:
            continue
        previous = [c.metadata.get("nbgrader", {}).get("grade_id") for c in source_cells[:index]]
        ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in notebook.cells]
        anchor = max((ids.index(p) for p in previous if p in ids), default=-1)
        notebook.cells.insert(anchor + 1, cell)
        present.add(meta["grade_id"])
        restored.append(meta["grade_id"])
    if restored:
        nbformat.write(notebook, str(submission))
    return restored


def copy_regular_files(source: Path, destination: Path) -> None:
    """Copy a submission folder, regular files only: a symbolic link (to the solutions, say)
    is neither followed nor copied."""
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            continue
        target = destination / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def sandbox_options(scratch: Path) -> tuple[list[str], dict[str, str]]:
    """nbgrader options and environment that run the kernel in the sandbox (tools/sandbox.py),
    talking over Unix sockets in ``scratch/runtime``; plain kernel options when there is none."""
    runtime = scratch / "runtime"
    runtime.mkdir()
    options = ["--KernelManager.transport=ipc", f"--KernelManager.ip={runtime / 'kernel'}",
               f"--KernelManager.connection_file={runtime / 'kernel.json'}"]
    if SANDBOX_OFF_REASON is not None:
        return options, {}
    sandbox.write_kernel_spec(scratch / "jupyter" / "kernels", sandbox.Limits())
    return options, {"JUPYTER_PATH": str(scratch / "jupyter")}


def failure_reason(log: str) -> str:
    """A one-line explanation of why nbgrader could not grade a submission."""
    if "Kernel died" in log or "DeadKernelError" in log:
        return "the kernel died while running the notebook (os._exit, a crash or out of memory)"
    lines = [line for line in log.splitlines() if "Error" in line or "ERROR" in line]
    return lines[-1].strip()[:300] if lines else "nbgrader could not grade it (see its log)"


def grade_submission(root: Path, student: str, assignment: str, *options: str) -> SubmissionResult:
    """Check, repair and autograde one submission in a scratch copy, its kernel sandboxed;
    problems are flagged, never fatal. Only the executed notebook comes back, into autograded/."""
    path = root / "submitted" / student / assignment / f"{assignment}.ipynb"
    problem = notebook_problem(path)
    if problem:
        return SubmissionResult(student, assignment, *problem)
    source = root / "solutions" / assignment / f"{assignment}.ipynb"
    with tempfile.TemporaryDirectory(prefix="saliencylab-grade-") as folder:
        scratch = Path(folder)
        copy_regular_files(path.parent, scratch / "submitted" / student / assignment)
        copy = scratch / "submitted" / student / assignment / path.name
        restored = restore_deleted_test_cells(copy, source)
        findings = audit.audit_notebook(nbformat.read(str(copy), as_version=4), nbformat.read(str(source), as_version=4))
        kernel_options, env = sandbox_options(scratch)
        result = nbgrader(
            root, "autograde", assignment, "--force", "--create", f"--student={student}",
            f"--CourseDirectory.submitted_directory={scratch / 'submitted'}",
            f"--CourseDirectory.autograded_directory={scratch / 'autograded'}",
            *kernel_options, *options, env=env,
        )
        executed = scratch / "autograded" / student / assignment / path.name
        if executed.is_symlink() or not executed.is_file():
            return SubmissionResult(student, assignment, "not graded", failure_reason(result.stderr))
        destination = root / "autograded" / student / assignment
        shutil.rmtree(destination, ignore_errors=True)
        destination.mkdir(parents=True)
        shutil.copyfile(executed, destination / path.name)
    notes = [f"restored deleted test cells {restored}"] if restored else []
    if findings:
        zeroed = withdraw_automatic_points(root, student, assignment, findings)
        notes.append("; ".join(f"{f.cell}: {f.reason}" for f in findings) + f" -> 0 points on {zeroed}")
        return SubmissionResult(student, assignment, "tampering", "; ".join(notes))
    return SubmissionResult(student, assignment, "graded", "; ".join(notes))


def withdraw_automatic_points(root: Path, student: str, assignment: str, findings: list[audit.Finding]) -> list[str]:
    """Score 0 the autograded cells of each flagged exercise (every autograded cell when the
    finding is in a cell the student added), as a manual score that the instructor can change
    in formgrader after looking. Returns the grade ids zeroed."""
    from nbgrader.api import Gradebook

    exercises = {finding.exercise for finding in findings}
    everything = None in exercises  # a cell they added can change any exercise's result
    zeroed = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(assignment, assignment, student)
        for grade in notebook.grades:
            if grade.auto_score is None:
                continue  # graded by hand
            if everything or any(grade.name.startswith(f"{exercise}_test") for exercise in exercises - {None}):
                grade.manual_score = 0.0
                zeroed.append(grade.name)
        gradebook.db.commit()
    return sorted(zeroed)


HIDDEN_TESTS = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.M | re.S)
REVEAL_HIDDEN_TESTS = os.environ.get("REVEAL_HIDDEN_TESTS", "") == "1"


def for_feedback(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What a student may see of an autograded notebook: in every autograded test cell the
    hidden tests' code is replaced by a note, and an error keeps its message (the check's named
    mistake) but not its traceback, whose context lines would quote the hidden tests."""
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        cell.source = HIDDEN_TESTS.sub("# (hidden tests: their code is not shown)\n", cell.source)
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                output.traceback = [f"{output.ename}: {output.evalue}"]
    return notebook


def generate_feedback(root: Path, assignment: str) -> subprocess.CompletedProcess:
    """HTML feedback for every autograded submission of ``assignment``: pass/fail, points and
    messages per graded cell, without the hidden tests' code (``REVEAL_HIDDEN_TESTS=1`` keeps it)."""
    if REVEAL_HIDDEN_TESTS:
        return nbgrader(root, "generate_feedback", assignment, "--force")
    with tempfile.TemporaryDirectory(prefix="saliencylab-feedback-") as folder:
        for executed in (root / "autograded").glob(f"*/{assignment}/*.ipynb"):
            stripped = Path(folder) / executed.relative_to(root / "autograded")
            stripped.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(for_feedback(nbformat.read(str(executed), as_version=4)), str(stripped))
        return nbgrader(root, "generate_feedback", assignment, "--force",
                        f"--CourseDirectory.autograded_directory={folder}")


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


def students(root: Path, assignment: str) -> list[str]:
    """Students with a folder for ``assignment`` under submitted/."""
    return sorted(p.parent.name for p in (root / "submitted").glob(f"*/{assignment}") if p.is_dir())


def grade_all(root: Path, *options: str) -> list[SubmissionResult]:
    """Grade every submission of every assignment under ``root``; feedback for the graded."""
    results = []
    for assignment in submitted_assignments(root):
        register_assignment(root, assignment)
        for student in students(root, assignment):
            result = grade_submission(root, student, assignment, *options)
            print(f"  {assignment:<28} {student:<20} {result.status} {result.detail}", flush=True)
            results.append(result)
        generate_feedback(root, assignment)
    return results


def write_csv(results: list[SubmissionResult], scores: list[CellScore], path: Path) -> list[list[str]]:
    """One row per submission: score, maximum, cells still to grade by hand, and its status."""
    rows = [["student", "assignment", "score", "max_score", "cells_to_grade_by_hand", "status", "detail"]]
    for result in sorted(results, key=lambda r: (r.assignment, r.student)):
        mine = [s for s in scores if (s.student, s.assignment) == (result.student, result.assignment)]
        maximum = sum(s.max_score for s in mine) if mine else _max_score(scores, result.assignment)
        score = sum(s.score for s in mine) if result.graded else 0.0
        manual = sum(s.needs_manual_grade for s in mine) if result.graded else 0
        rows.append([result.student, result.assignment, f"{score:g}", f"{maximum:g}", str(manual),
                     result.status, result.detail])
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return rows


def _max_score(scores: list[CellScore], assignment: str) -> float:
    per_student: dict[str, float] = {}
    for s in scores:
        if s.assignment == assignment:
            per_student[s.student] = per_student.get(s.student, 0.0) + s.max_score
    return max(per_student.values(), default=0.0)


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:6], widths)))


def main() -> int:
    root = COURSE_ROOT
    if SANDBOX_OFF_REASON is None:
        print("Student code runs in a sandbox (bubblewrap): it sees only its own copy of the submission.")
    else:
        print(f"WARNING: isolation is OFF ({SANDBOX_OFF_REASON}). Each submission still runs in a "
              "scratch copy, but its code can read and change any file you can.", file=sys.stderr)
    if not submitted_assignments(root):
        print("No submissions: put them in submitted/<student>/<assignment>/<assignment>.ipynb")
        return 1
    results = grade_all(root)
    rows = write_csv(results, cell_scores(root), root / "grades.csv")
    print_table(rows)
    flagged = [r for r in results if r.status != "graded"]
    print(f"\n{len(results) - len(flagged)} graded, {len(flagged)} flagged; grades.csv and feedback/ written.")
    for result in flagged:
        print(f"  flagged: {result.student} / {result.assignment}: {result.status}: {result.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
