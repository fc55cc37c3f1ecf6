"""Throughput of `make grade`: N synthetic submissions of one assignment, one by one vs in parallel.

    .venv/bin/python bench/bench_grading.py                 # 16 submissions, 2 jobs
    .venv/bin/python bench/bench_grading.py --submissions 8 --jobs 2 4
    .venv/bin/python bench/bench_grading.py --lesson 02_saliency --submissions 8

The assignment imports torch and does about a second of tensor work per exercise, like a lesson
cell; the class is a mix of correct, wrong, crashing (raises) and looping (stopped by the cell
timeout) submissions. Each setting grades the whole class from scratch (``FORCE``) in a fresh
copy of the course, in this process, and the unchanged regrade runs last. Printed and written to
``bench/results/bench_grading.json``:

* submissions per minute, and the speed-up over one by one (same process, same machine);
* per-submission overhead: the worker's wall time for a submission minus the time its own cells
  ran (nbclient's execution timestamps in the executed notebook), i.e. nbgrader's start, the
  sandbox, the kernel's start, and merging;
* peak memory: the largest resident size of this process and all its descendants together
  (sampled every 0.2 s);
* an unchanged regrade's time per submission;
* a projection of 300 students x 10 assignments onto 2, 16 and 64 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import grade  # noqa: E402
import nbtools  # noqa: E402
from exercise_cells import wrong_answers  # noqa: E402

ASSIGNMENT = "bench"
WORK = "import torch\ntorch.manual_seed(0)\nx = torch.randn(384, 384)\nfor _ in range(60):\n    x = torch.tanh(x @ x.T / 384)\n"
ANSWERS = {
    "correct": "    ### BEGIN SOLUTION\n    return 2 * v\n    ### END SOLUTION",
    "wrong": "    return 3 * v",
    "crashing": "    raise RuntimeError('not done')",
    "looping": "    while True:\n        pass",
}
MIX = ["correct", "correct", "wrong", "correct", "crashing", "correct", "wrong", "looping"]


def assignment(answer: str) -> nbformat.NotebookNode:
    return nbtools.new_notebook([
        nbtools.markdown("# A benchmark assignment"),
        nbtools.code(WORK),
        nbtools.solution("def double(v):\n" + ANSWERS[answer], "double"),
        nbtools.tests("assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(3) == 6\n### END HIDDEN TESTS",
                      "double_test", 2),
        nbtools.code(WORK),
        nbtools.solution("def triple(v):\n    ### BEGIN SOLUTION\n    return 3 * v\n    ### END SOLUTION", "triple"),
        nbtools.tests("assert triple(2) == 6", "triple_test", 1),
    ], ASSIGNMENT)


def lesson_submission(lesson: str, kind: str, index: int) -> nbformat.NotebookNode:
    """A submission of a real lesson: its solution (correct), its release (every exercise left
    as the stub, which raises), a wrong answer of the tests in one exercise, or one exercise
    that loops until the cell's time limit."""
    if kind == "crashing":
        return nbformat.read(str(ROOT / "notebooks" / lesson / f"{lesson}.ipynb"), as_version=4)
    notebook = nbformat.read(str(ROOT / "solutions" / lesson / f"{lesson}.ipynb"), as_version=4)
    exercises = [c for c in notebook.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
    if kind == "wrong":
        wrong = wrong_answers(lesson)[index % 7]
        cell = next(c for c in exercises if c.metadata["nbgrader"]["grade_id"] == wrong.exercise)
        cell.source = wrong.source()
    elif kind == "looping":
        name = exercises[0].source.split("def ", 1)[1].split("(", 1)[0]
        exercises[0].source = f"def {name}(*args, **kwargs):\n    while True:\n        pass\n"
    return notebook


def make_course(folder: Path, submissions: int, lesson: str | None = None) -> tuple[Path, str]:
    """A course with one assignment (the synthetic one, or a real lesson) and a mixed class."""
    name = lesson or ASSIGNMENT
    root = folder / "course"
    root.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    if lesson:
        shutil.copytree(ROOT / "solutions" / lesson, root / "solutions" / lesson)
    else:
        nbtools.write(assignment("correct"), root / "solutions" / name / f"{name}.ipynb")
    for index in range(submissions):
        kind = MIX[index % len(MIX)]
        nb = lesson_submission(lesson, kind, index) if lesson else assignment(kind)
        nbtools.write(nb, root / "submitted" / f"student{index:03d}" / name / f"{name}.ipynb")
    return root, name


class PeakMemory:
    """The largest total resident size of this process and its descendants while running."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cell_seconds(executed: Path) -> float:
    """Time the notebook's own cells ran (nbclient's execute_input -> execute_reply)."""
    total = 0.0
    for cell in nbformat.read(str(executed), as_version=4).cells:
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            total += (dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
                      - dt.datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    return total


def run_setting(submissions: int, jobs: int, timeout: int, lesson: str | None, threads: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="saliencylab-bench-grading-") as folder:
        root, name = make_course(Path(folder), submissions, lesson)
        grade.ensure_registered(root, name, grade.GradingCache(root))  # once, outside the timing
        with PeakMemory() as memory:
            started = time.perf_counter()
            results = grade.grade_all(root, f"--Execute.timeout={timeout}", jobs=jobs, force=True, threads=threads)
            elapsed = time.perf_counter() - started
        overheads = []
        for result in results:
            executed = root / "autograded" / result.student / name / f"{name}.ipynb"
            if result.graded and executed.exists():
                overheads.append(result.seconds - cell_seconds(executed))
        started = time.perf_counter()
        again = grade.grade_all(root, f"--Execute.timeout={timeout}", jobs=jobs)
        unchanged = time.perf_counter() - started
        scores = sorted((s.student, s.grade_id, s.score) for s in grade.cell_scores(root))
    assert not any(r.rerun for r in again), "an unchanged regrade ran a submission again"
    return {
        "jobs": jobs, "threads": threads or grade.kernel_threads(jobs), "submissions": submissions, "seconds": elapsed,
        "per_minute": 60 * submissions / elapsed,
        "overhead_mean_s": sum(overheads) / len(overheads), "overhead_max_s": max(overheads),
        "peak_memory_gb": memory.peak / 2**30,
        "unchanged_regrade_s_per_submission": unchanged / submissions,
        "statuses": sorted((r.student, r.status) for r in results), "scores": scores,
    }


def projection(one_by_one: dict, parallel: dict, notebook_seconds: float = 25.0) -> list[dict]:
    """300 students x 10 assignments, each notebook ``notebook_seconds`` of cells plus the measured
    overhead, at the measured parallel efficiency per core (cores / jobs workers each)."""
    overhead = one_by_one["overhead_mean_s"]
    efficiency = parallel["per_minute"] / one_by_one["per_minute"] / parallel["jobs"]
    rows = []
    for cores in (2, 16, 64):
        hours = 3000 * (notebook_seconds + overhead) / (cores * efficiency) / 3600
        rows.append({"cores": cores, "hours": hours})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submissions", type=int, default=16)
    parser.add_argument("--jobs", type=int, nargs="+", default=[2])
    parser.add_argument("--timeout", type=int, default=10, help="nbgrader's per-cell limit (the loops hit it)")
    parser.add_argument("--lesson", help="grade a real lesson (e.g. 02_saliency): its solution, its release, "
                        "its tests' wrong answers and a looping exercise, instead of the synthetic assignment")
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"sandbox {'on' if grade.SANDBOX_OFF_REASON is None else 'OFF'}", flush=True)
    runs = []
    settings = [(1, None), *((jobs, None) for jobs in args.jobs)]
    if (os.cpu_count() or 1) > 1:
        settings.insert(1, (1, 1))  # one by one, one thread: how much of the gain is the idle core
    for jobs, threads in settings:
        run = run_setting(args.submissions, jobs, args.timeout, args.lesson, threads)
        runs.append(run)
        print(f"jobs={jobs} threads={run['threads']}: {run['seconds']:.0f} s for {run['submissions']}, {run['per_minute']:.1f}/min, "
              f"overhead {run['overhead_mean_s']:.2f} s (max {run['overhead_max_s']:.2f}), peak "
              f"{run['peak_memory_gb']:.1f} GB, unchanged regrade {run['unchanged_regrade_s_per_submission']:.3f} "
              "s/submission", flush=True)
    reference = runs[0]
    for run in runs[1:]:
        same = run["scores"] == reference["scores"] and run["statuses"] == reference["statuses"]
        print(f"jobs={run['jobs']} threads={run['threads']}: speed-up {run['per_minute'] / reference['per_minute']:.2f}x over one by one; "
              f"scores and statuses identical: {same}")
    rows = projection(reference, runs[-1])
    print("300 students x 10 assignments (25 s of cells each, this run's overhead and parallel efficiency): "
          + ", ".join(f"{r['cores']} cores {r['hours']:.1f} h" for r in rows))
    out = ROOT / "bench" / "results" / f"bench_grading{'_' + args.lesson if args.lesson else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.node(), "cores": os.cpu_count(), "runs": runs,
                               "projection": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
