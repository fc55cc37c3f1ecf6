"""Autograde every submission and report (run by `make grade`).

Submissions go in ``submitted/<student>/<assignment>/<assignment>.ipynb``. For each assignment
that has submissions this script

1. registers the assignment's cells in ``gradebook.db`` once (nbgrader needs them; the throwaway
   release goes to a temporary folder so ``notebooks/`` is never touched), and in a template
   gradebook that holds that assignment only,
2. audits each submission's code and sends it, with the template, as one task to a worker
   (``tools/grading_task.py``): ``nbgrader autograde`` in a scratch course, the kernel sandboxed.
   Workers run in parallel: a local Dask cluster of ``JOBS`` processes (default: one per core), or
   the Dask cluster at ``SCHEDULER=tcp://host:8786``. A worker that dies is replaced and its
   submission retried once, then flagged,
3. merges each executed notebook's scores into ``gradebook.db`` (this process alone writes it;
   manual grades in formgrader keep working), flags tampering, and writes HTML feedback without
   the hidden tests to ``feedback/<student>/<assignment>/``,

then writes ``grades.csv`` and prints a summary. A regrade re-runs only the submissions whose
files, source notebook, checks or options changed (content hashes in ``.grading/``);
``FORCE=1`` regrades everything.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import audit
import grading_task
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
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}"]
    if not any(arg.startswith("--CourseDirectory.db_url=") for arg in args):
        command.append(f"--CourseDirectory.db_url=sqlite:///{root / 'gradebook.db'}")
    return subprocess.run(command, cwd=root, capture_output=True, text=True, env=env, timeout=timeout)


def submitted_assignments(root: Path) -> list[str]:
    """Assignments that at least one student has submitted."""
    return sorted({p.name for p in (root / "submitted").glob("*/*") if p.is_dir()})


def register_assignment(root: Path, assignment: str) -> Path:
    """Put the assignment's graded cells into the gradebook, and into a template gradebook that
    holds this assignment only (what workers get), without touching notebooks/. Returns the
    template's path."""
    template = state_folder(root) / "templates" / f"{assignment}.db"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.unlink(missing_ok=True)
    for database in (root / "gradebook.db", template):
        with tempfile.TemporaryDirectory(prefix="saliencylab-grade-") as scratch:
            result = nbgrader(root, "generate_assignment", assignment, "--force",
                              f"--CourseDirectory.release_directory={scratch}",
                              f"--CourseDirectory.db_url=sqlite:///{database}")
        if result.returncode != 0:
            raise RuntimeError(f"cannot register {assignment} in the gradebook:\n{result.stderr[-3000:]}")
    return template


def state_folder(root: Path) -> Path:
    """The grader's own state (template gradebooks, the regrade cache): never in git."""
    return root / ".grading"


@dataclass
class SubmissionResult:
    """How one student's submission of one assignment went."""

    student: str
    assignment: str
    status: str  # "graded", "tampering" (graded, flagged), or what went wrong, e.g. "missing notebook"
    detail: str = ""
    seconds: float = 0.0  # the worker's time for this submission (0 when it was not run)
    rerun: bool = True  # False when an unchanged submission kept its previous result
    withdrawn: tuple[str, ...] = ()  # autograded cells zeroed for tampering

    @property
    def graded(self) -> bool:
        return self.status in ("graded", "tampering")


def read_submission(files: dict[str, bytes], name: str, folder: Path) -> nbformat.NotebookNode | tuple[str, str]:
    """The submitted notebook ``name`` from its folder's ``files``, or (status, why) when it
    cannot be graded."""
    if name not in files:
        others = sorted(n for n in files if n.endswith(".ipynb"))
        found = f"; found {others}: rename it to {name}" if others else ""
        return "missing notebook", f"no {name} in {folder}{found}"
    try:
        return nbformat.reads(files[name].decode("utf-8"), as_version=4)
    except Exception as error:  # nbformat raises several kinds for broken files
        return "invalid notebook", f"{name} is not a valid notebook ({type(error).__name__}: {str(error)[:200]})"


def restore_deleted_test_cells(notebook: nbformat.NotebookNode, source: nbformat.NotebookNode) -> list[str]:
    """Put back into ``notebook`` (the grader's copy, in memory: the student's file is never
    modified) the locked cells (tests, setup) a student deleted, from the source notebook.

    nbgrader overwrites edited locked cells with the source version but scores a deleted test
    cell as 0 without running it; restoring it means the real tests are always the ones run.
    Returns the restored ids.
    """
    source_cells = source.cells
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
    return restored


def failure_reason(log: str) -> str:
    """A one-line explanation of why nbgrader could not grade a submission."""
    if "Kernel died" in log or "DeadKernelError" in log:
        return "the kernel died while running the notebook (os._exit, a crash or out of memory)"
    lines = [line for line in log.splitlines() if "Error" in line or "ERROR" in line]
    return lines[-1].strip()[:300] if lines else "nbgrader could not grade it (see its log)"


TAMPERING_ERRORS = ("TamperingError", "ReferenceImplementationCalled")
CHECK_CALL = re.compile(r"^[ \t]*check_\w+\(", re.M)
# the one success line every check prints (saliencylab.checks._common.passed)
VERDICT = re.compile(r"^\u2713 check_\w+ passed: ", re.M)


def runtime_findings(executed: nbformat.NotebookNode) -> list[audit.Finding]:
    """What the run itself revealed: a check that raised a tampering error (something it relies
    on was patched, or the reference implementation was called), or a test cell that ran without
    error but whose checks printed no verdict (a check replaced by a function that does nothing)."""
    exercises = sorted((c.metadata.get("nbgrader", {}).get("grade_id", "") for c in executed.cells
                        if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"),
                       key=len, reverse=True)
    findings = []
    for cell in executed.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        grade_id = meta.get("grade_id", "")
        exercise = next((e for e in exercises if grade_id.startswith(f"{e}_test")), None)
        outputs = cell.get("outputs", [])
        errors = [o for o in outputs if o.output_type == "error"]
        for error in errors:
            if error.ename in TAMPERING_ERRORS:
                findings.append(audit.Finding(grade_id, f"{error.ename}: {error.evalue[:300]}", exercise))
        verdicts = sum(len(VERDICT.findall(str(o.get("text", "")))) for o in outputs if o.output_type == "stream")
        calls = len(CHECK_CALL.findall(cell.source))
        if not errors and verdicts < calls:
            findings.append(audit.Finding(grade_id, f"{calls} check(s) ran without printing a verdict "
                                          "(replaced by code that does nothing?)", exercise))
    return findings


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


def generate_feedback(root: Path, assignment: str, students: Iterable[str]) -> subprocess.CompletedProcess:
    """HTML feedback for these students' autograded ``assignment``, in one nbgrader call:
    pass/fail, points and messages per graded cell, without the hidden tests' code
    (``REVEAL_HIDDEN_TESTS=1`` keeps it)."""
    with tempfile.TemporaryDirectory(prefix="saliencylab-feedback-") as folder:
        for student in students:
            executed = root / "autograded" / student / assignment / SUBMISSION_NOTEBOOK.format(assignment=assignment)
            notebook = nbformat.read(str(executed), as_version=4)
            copy = Path(folder) / executed.relative_to(root / "autograded")
            copy.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook if REVEAL_HIDDEN_TESTS else for_feedback(notebook), str(copy))
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


SUBMISSION_NOTEBOOK = "{assignment}.ipynb"


def submission_files(folder: Path) -> dict[str, bytes]:
    """A submission folder's regular files (relative path -> bytes): a symbolic link (to the
    solutions, say) is neither followed nor copied."""
    if not folder.is_dir() or folder.is_symlink():
        return {}
    files = {}
    for base, _, names in sorted(os.walk(folder)):  # a linked folder is listed, never entered
        for name in sorted(names):
            path = Path(base) / name
            if path.is_file() and not path.is_symlink():
                files[str(path.relative_to(folder))] = path.read_bytes()
    return files


def source_files(root: Path, assignment: str) -> dict[str, bytes]:
    """The assignment's files other than notebooks (data the notebook reads), which nbgrader
    copies next to the submission."""
    folder = root / "solutions" / assignment
    return {name: content for name, content in submission_files(folder).items() if not name.endswith(".ipynb")}


def checks_fingerprint() -> str:
    """A hash of the library's checks (found without importing it, which would import torch):
    a change to a check regrades every submission."""
    spec = importlib.util.find_spec("saliencylab")
    folder = Path(spec.origin).parent / "checks" if spec and spec.origin else None
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")) if folder else []:
        if path.suffix in (".py", ".json"):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def fingerprint(*parts: bytes | str | dict[str, bytes]) -> str:
    """A content hash of ``parts`` (bytes, text, or files by relative path)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, dict):
            for name, content in sorted(part.items()):
                digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        else:
            digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\1")
    return digest.hexdigest()


@dataclass(frozen=True)
class AssignmentSource:
    """What every submission of one assignment is graded against, read once per run: the
    source notebook, its other files, the template gradebook, the course's nbgrader config,
    and the part of each submission's content key they decide."""

    name: str
    notebook: nbformat.NotebookNode
    source_files: dict[str, bytes]
    gradebook: bytes
    config: str
    key: str


def load_assignment(root: Path, assignment: str, template: Path, options: tuple[str, ...] = ()) -> AssignmentSource:
    source_path = root / "solutions" / assignment / SUBMISSION_NOTEBOOK.format(assignment=assignment)
    extra = source_files(root, assignment)
    key = fingerprint(source_path.read_bytes(), extra, checks_fingerprint(), " ".join(options),
                      str(SANDBOX_OFF_REASON))
    return AssignmentSource(assignment, nbformat.read(str(source_path), as_version=4), extra,
                            template.read_bytes(), (root / "nbgrader_config.py").read_text(), key)


@dataclass
class Prepared:
    """One submission ready to grade: its task (None when it cannot be run, with ``result``
    saying why), what the static audit found, the test cells put back, and its content key."""

    student: str
    assignment: str
    key: str
    task: grading_task.GradingTask | None = None
    result: SubmissionResult | None = None
    findings: list[audit.Finding] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    timestamp: str | None = None


def prepare(root: Path, student: str, source: AssignmentSource, options: tuple[str, ...], threads: int) -> Prepared:
    """Read, repair (deleted test cells restored, in memory) and audit one submission."""
    assignment = source.name
    folder = root / "submitted" / student / assignment
    name = SUBMISSION_NOTEBOOK.format(assignment=assignment)
    files = submission_files(folder)
    prepared = Prepared(student, assignment, fingerprint(files, source.key))
    notebook = read_submission(files, name, folder)
    if isinstance(notebook, tuple):
        prepared.result = SubmissionResult(student, assignment, *notebook)
        return prepared
    prepared.restored = restore_deleted_test_cells(notebook, source.notebook)
    prepared.findings = audit.audit_notebook(notebook, source.notebook)
    files[name] = nbformat.writes(notebook).encode()
    prepared.timestamp = files.get("timestamp.txt", b"").decode(errors="replace").strip() or None
    prepared.task = grading_task.GradingTask(
        student=student, assignment=assignment, files=files, source_files=source.source_files,
        gradebook=source.gradebook, config=source.config, options=options, threads=threads,
    )
    return prepared


def merge(root: Path, prepared: Prepared, outcome: grading_task.TaskOutcome | BaseException,
          previously_withdrawn: Iterable[str] = ()) -> SubmissionResult:
    """Bring one worker's result home: the executed notebook into autograded/, its scores into
    the gradebook (as nbgrader's own SaveAutoGrades does), tampering flagged and its points
    withdrawn. Only this process writes the gradebook."""
    student, assignment = prepared.student, prepared.assignment
    if isinstance(outcome, BaseException):
        return SubmissionResult(student, assignment, "failed",
                                f"its worker failed twice ({type(outcome).__name__}: {str(outcome)[:200]})")
    if outcome.executed is None:
        return SubmissionResult(student, assignment, "not graded", failure_reason(outcome.log_tail), outcome.seconds)
    executed = nbformat.reads(outcome.executed.decode("utf-8", errors="replace"), as_version=4)
    destination = root / "autograded" / student / assignment
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    (destination / SUBMISSION_NOTEBOOK.format(assignment=assignment)).write_bytes(outcome.executed)
    save_scores(root, prepared, executed, previously_withdrawn)
    notes = [f"restored deleted test cells {prepared.restored}"] if prepared.restored else []
    findings = prepared.findings + runtime_findings(executed)
    if not findings:
        return SubmissionResult(student, assignment, "graded", "; ".join(notes), outcome.seconds)
    zeroed = withdraw_automatic_points(root, student, assignment, findings)
    notes.append("; ".join(f"{f.cell}: {f.reason}" for f in findings) + f" -> 0 points on {zeroed}")
    return SubmissionResult(student, assignment, "tampering", "; ".join(notes), outcome.seconds, withdrawn=tuple(zeroed))


def save_scores(root: Path, prepared: Prepared, executed: nbformat.NotebookNode,
                previously_withdrawn: Iterable[str]) -> None:
    """Record the executed notebook's automatic scores and comments in the gradebook with
    nbgrader's own preprocessor; manual scores an instructor gave are kept, except the zeros
    this grader set on an earlier run of a since-changed submission."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import SaveAutoGrades

    url = f"sqlite:///{root / 'gradebook.db'}"
    student, assignment = prepared.student, prepared.assignment
    with warnings.catch_warnings(), Gradebook(url) as gradebook:
        # nbgrader's own autograde emits these too ("... not in session, add operation ...")
        warnings.filterwarnings("ignore", message=".*not in session.*")
        gradebook.update_or_create_student(student)
        extra = {"timestamp": prepared.timestamp} if prepared.timestamp else {}
        gradebook.update_or_create_submission(assignment, student, **extra)
        notebook = gradebook.find_submission_notebook(assignment, assignment, student)
        for grade in notebook.grades:
            if grade.name in previously_withdrawn and grade.manual_score == 0.0:
                grade.manual_score = None
        gradebook.db.commit()
    resources = {"nbgrader": {"notebook": assignment, "assignment": assignment, "student": student, "db_url": url}}
    SaveAutoGrades().preprocess(executed, resources)


class GradingCache:
    """What the last run graded, by content key (``.grading/cache.json``): an unchanged
    submission keeps its result; an unchanged source notebook keeps its registration."""

    def __init__(self, root: Path, force: bool = False) -> None:
        self.path = state_folder(root) / "cache.json"
        fresh = force or not self.path.exists() or not (root / "gradebook.db").exists()
        self.data: dict = {"registered": {}, "submissions": {}} if fresh else json.loads(self.path.read_text())

    def registration(self, assignment: str) -> str | None:
        return self.data["registered"].get(assignment)

    def register(self, assignment: str, key: str) -> None:
        self.data["registered"][assignment] = key
        self.save()

    def previous(self, prepared: Prepared) -> dict:
        return self.data["submissions"].get(f"{prepared.assignment}/{prepared.student}", {})

    def store(self, prepared: Prepared, result: SubmissionResult) -> None:
        self.data["submissions"][f"{prepared.assignment}/{prepared.student}"] = {
            "key": prepared.key, "status": result.status, "detail": result.detail,
            "seconds": result.seconds, "withdrawn": list(result.withdrawn)}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.data, indent=1))
        scratch.replace(self.path)  # atomic: an interrupted run leaves the previous cache whole


def ensure_registered(root: Path, assignment: str, cache: GradingCache) -> Path:
    """Register ``assignment`` unless its source is unchanged since the last registration."""
    source = root / "solutions" / assignment
    key = fingerprint(submission_files(source))
    template = state_folder(root) / "templates" / f"{assignment}.db"
    if cache.registration(assignment) != key or not template.exists():
        template = register_assignment(root, assignment)
        cache.register(assignment, key)
    return template


def unchanged_result(root: Path, prepared: Prepared, previous: dict) -> SubmissionResult | None:
    """The previous result when nothing that decides it has changed (and its notebook is still
    in autograded/), else None."""
    if previous.get("key") != prepared.key:
        return None
    executed = root / "autograded" / prepared.student / prepared.assignment / SUBMISSION_NOTEBOOK.format(
        assignment=prepared.assignment)
    if previous["status"] in ("graded", "tampering") and not executed.exists():
        return None
    return SubmissionResult(prepared.student, prepared.assignment, previous["status"], previous["detail"],
                            previous.get("seconds", 0.0), rerun=False)


def grade_all(root: Path, *options: str, jobs: int | None = None, scheduler: str | None = None,
              force: bool = False, progress: bool = False, threads: int | None = None) -> list[SubmissionResult]:
    """Grade every submission of every assignment under ``root``: changed ones only (all with
    ``force``), ``jobs`` at a time on a local Dask cluster (in this process when 1), or on the
    Dask cluster at ``scheduler``; feedback for each one regraded. Each student kernel uses
    ``threads`` torch threads (default: see :func:`kernel_threads`)."""
    cache = GradingCache(root, force)
    jobs = max(1, jobs or os.cpu_count() or 1)
    threads = threads or kernel_threads(jobs)
    results: list[SubmissionResult] = []
    pending: list[Prepared] = []
    for assignment in submitted_assignments(root):
        source = load_assignment(root, assignment, ensure_registered(root, assignment, cache), options)
        for student in students(root, assignment):
            prepared = prepare(root, student, source, options, threads)
            previous = cache.previous(prepared)
            kept = unchanged_result(root, prepared, previous)
            if kept is not None:
                results.append(kept)
            elif prepared.task is None:
                results.append(prepared.result)
                cache.store(prepared, prepared.result)
            else:
                pending.append(prepared)

    def finished(index: int, outcome: grading_task.TaskOutcome | BaseException) -> None:
        prepared = pending[index]
        withdrawn_before = cache.previous(prepared).get("withdrawn", [])
        result = merge(root, prepared, outcome, withdrawn_before)
        cache.store(prepared, result)
        results.append(result)

    run_tasks([p.task for p in pending], jobs, scheduler, finished, progress)
    for assignment in sorted({p.assignment for p in pending}):
        regraded = [r.student for r in results if r.assignment == assignment and r.rerun and r.graded]
        if regraded:
            generate_feedback(root, assignment, regraded)
    return results


def kernel_threads(jobs: int) -> int:
    """Torch threads per student kernel: ``OMP_NUM_THREADS`` where the caller set it (the test
    suite runs one thread per process), else this machine's cores shared among ``jobs``."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // jobs)


def run_tasks(tasks: list[grading_task.GradingTask], jobs: int, scheduler: str | None,
              finished: Callable[[int, grading_task.TaskOutcome | BaseException], None],
              progress: bool = False, task_fn: Callable = grading_task.run) -> None:
    """Run every task and call ``finished(index, outcome)`` as each completes (in this process,
    in completion order). One job and no scheduler: one after another here. Otherwise on Dask:
    a local cluster of ``jobs`` worker processes, or the cluster at ``scheduler``; a task whose
    worker dies, or that raises, is retried once, then reported as the exception."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="notebook", desc="grading", disable=not progress or not tasks,
               dynamic_ncols=True, file=sys.stderr)
    if not tasks:
        return
    if jobs == 1 and scheduler is None:
        for index, task in enumerate(tasks):
            finished(index, _with_one_retry(task_fn, task))
            bar.update()
        bar.close()
        return
    import logging

    import dask
    from dask.distributed import Client, LocalCluster, as_completed
    from distributed.diagnostics.plugin import UploadFile

    # workers that may start processes: each submission's nbgrader is forked from a server that
    # has imported it once (a daemon worker falls back to starting a fresh interpreter each time)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.worker.daemon": False}):
        cluster = None if scheduler else LocalCluster(
            n_workers=min(jobs, len(tasks)), threads_per_worker=1, processes=True, memory_limit=0,
            dashboard_address=None, silence_logs=logging.ERROR)
        try:
            with Client(scheduler or cluster) as client:
                if scheduler:  # a local cluster's workers import them from this process's sys.path
                    for module in (sandbox, grading_task):
                        # to the workers only: Client.upload_file also loads them into the
                        # scheduler, which may be this very process, from a folder deleted later
                        client.register_plugin(UploadFile(module.__file__, load=True), name=f"upload-{module.__name__}")
                futures = {client.submit(task_fn, task, pure=False, retries=1,
                                         key=f"grade-{task.assignment}-{task.student}-{index}-{time.time_ns()}"): index
                           for index, task in enumerate(tasks)}
                for future in as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as error:  # KilledWorker after the retry, or the task's own error
                        outcome = error
                    finished(futures[future], outcome)
                    bar.update()
        finally:
            bar.close()
            if cluster is not None:
                cluster.close()


def _with_one_retry(task_fn: Callable, task: grading_task.GradingTask) -> grading_task.TaskOutcome | BaseException:
    for attempt in range(2):
        try:
            return task_fn(task)
        except Exception as error:
            if attempt == 1:
                return error
    raise AssertionError("not reached")


def grade_submission(root: Path, student: str, assignment: str, *options: str) -> SubmissionResult:
    """Grade one submission here, one after another (registration must have been done)."""
    template = state_folder(root) / "templates" / f"{assignment}.db"
    prepared = prepare(root, student, load_assignment(root, assignment, template, options), options,
                       threads=kernel_threads(1))
    if prepared.task is None:
        return prepared.result
    result = merge(root, prepared, _with_one_retry(grading_task.run, prepared.task))
    if result.graded:
        generate_feedback(root, assignment, [student])
    return result


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


def summary(results: list[SubmissionResult], slowest: int = 5) -> str:
    """Counts (graded / flagged / failed / unchanged) and the slowest submissions of this run."""
    counts = {"graded": 0, "flagged": 0, "failed": 0}
    for result in results:
        counts["graded" if result.status == "graded" else "flagged" if result.graded else "failed"] += 1
    rerun = [r for r in results if r.rerun and r.seconds > 0]
    lines = [f"{counts['graded']} graded, {counts['flagged']} flagged (tampering), {counts['failed']} failed "
             f"or not graded; {len(results) - len([r for r in results if r.rerun])} unchanged since the last run."]
    if rerun:
        lines.append("slowest: " + ", ".join(f"{r.student}/{r.assignment} {r.seconds:.0f} s"
                                            for r in sorted(rerun, key=lambda r: -r.seconds)[:slowest]))
    for result in results:
        if result.status != "graded":
            lines.append(f"  {result.status}: {result.student} / {result.assignment}: {result.detail}")
    return "\n".join(lines)


def regenerate_feedback(root: Path) -> int:
    """Feedback for every autograded submission from the gradebook as it is now (after grading
    written answers by hand in formgrader: `make feedback`)."""
    count = 0
    for assignment in submitted_assignments(root):
        graded = sorted(p.parent.parent.name for p in (root / "autograded").glob(f"*/{assignment}/{assignment}.ipynb"))
        if graded:
            result = generate_feedback(root, assignment, graded)
            if result.returncode != 0:
                print(f"feedback for {assignment} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
            count += len(graded)
    return count


def main() -> int:
    root = COURSE_ROOT
    if sys.argv[1:] == ["--feedback"]:
        print(f"feedback/ written for {regenerate_feedback(root)} submissions, with the gradebook's current scores.")
        return 0
    if SANDBOX_OFF_REASON is None:
        print("Student code runs in a sandbox (bubblewrap): it sees only its own copy of the submission.")
    else:
        print(f"WARNING: isolation is OFF ({SANDBOX_OFF_REASON}). Each submission still runs in a "
              "scratch copy, but its code can read and change any file you can.", file=sys.stderr)
    if not submitted_assignments(root):
        print("No submissions: put them in submitted/<student>/<assignment>/<assignment>.ipynb")
        return 1
    jobs = int(os.environ["JOBS"]) if os.environ.get("JOBS") else None
    scheduler = os.environ.get("SCHEDULER") or None
    where = f"on the Dask cluster at {scheduler}" if scheduler else f"{jobs or os.cpu_count()} at a time"
    print(f"Grading {where}; FORCE=1 regrades unchanged submissions too.", flush=True)
    results = grade_all(root, jobs=jobs, scheduler=scheduler, force=os.environ.get("FORCE") == "1", progress=True)
    rows = write_csv(results, cell_scores(root), root / "grades.csv")
    print_table(rows)
    print("\n" + summary(results) + "\ngrades.csv and feedback/ written.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
