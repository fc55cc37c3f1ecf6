"""One submission's autograde, as a self-contained task that any worker can run.

The coordinator (``tools/grade.py``) sends a :class:`GradingTask` with everything the run needs
as bytes: the submission's files, the assignment's other source files, a gradebook in which only
this assignment is registered, and ``nbgrader_config.py``. The worker (a thread here, a Dask
worker on another machine) rebuilds a scratch course from them, runs ``nbgrader autograde`` there
with the kernel sandboxed (``sandbox.py``) and returns the executed notebook. It never sees the
instructor's gradebook, ``submitted/`` or ``solutions/``, and writes nothing outside its scratch
folder: the coordinator alone merges the result into the gradebook.

A worker needs only the course's venv (the same packages) and these two files, which the
coordinator uploads to Dask workers itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import sandbox

LOG_TAIL = 20_000  # characters of nbgrader's log kept for the report


@dataclass(frozen=True)
class GradingTask:
    """Everything one autograde needs (paths are relative to the submission/source folder)."""

    student: str
    assignment: str
    files: dict[str, bytes]
    source_files: dict[str, bytes]
    gradebook: bytes
    config: str
    options: tuple[str, ...] = ()
    threads: int = 1  # torch threads of the student's kernel (cores / parallel jobs)
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)


@dataclass(frozen=True)
class TaskOutcome:
    """What came back: the executed notebook (None when nbgrader produced none) and the log."""

    executed: bytes | None
    log_tail: str
    seconds: float
    sandboxed: bool
    worker: str


def run(task: GradingTask) -> TaskOutcome:
    """Autograde ``task`` in a scratch course; the kernel sandboxed where bubblewrap works, as a
    user of its own (no other kernel on this machine runs as it meanwhile)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="saliencylab-grade-") as folder, sandbox.claim_uid() as uid:
        scratch = Path(folder)
        course = scratch / "course"
        _write_files(course / "submitted" / task.student / task.assignment, task.files)
        _write_files(course / "source" / task.assignment, task.source_files)
        (course / "gradebook.db").write_bytes(task.gradebook)
        (course / "nbgrader_config.py").write_text(task.config)
        sandboxed = sandbox_available()
        limits = dataclasses.replace(task.limits, uid=uid)
        kernel_options, env = _kernel_options(scratch, limits, sandboxed)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(task.threads)
        arguments = ["autograde", task.assignment, "--force", "--create", f"--student={task.student}",
                     f"--CourseDirectory.root={course}", "--CourseDirectory.source_directory=source",
                     f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}", *kernel_options, *task.options]
        log = scratch / "nbgrader.log"
        run_nbgrader(arguments, course, env, log, limits.memory_gb)
        executed = course / "autograded" / task.student / task.assignment / f"{task.assignment}.ipynb"
        notebook = executed.read_bytes() if executed.is_file() and not executed.is_symlink() else None
        tail = log.read_text(errors="replace")[-LOG_TAIL:]
    return TaskOutcome(notebook, tail, time.perf_counter() - started, sandboxed, platform.node())


@functools.lru_cache(maxsize=1)
def sandbox_available() -> bool:
    """Whether bubblewrap works here (probed once per worker process)."""
    return sandbox.unavailable_reason() is None


def run_nbgrader(arguments: list[str], cwd: Path, env: dict[str, str], log: Path, memory_gb: float) -> int:
    """``nbgrader <arguments>`` in a process of its own, its output to ``log`` (a file, not a pipe:
    a kernel printing gigabytes cannot fill this process's memory) and its address space capped
    as the kernel's is. The process is forked from a server that has imported nbgrader once (2 s
    per submission otherwise, most of a submission's overhead) where this process may have
    children (a Dask worker started as a daemon may not: then a fresh interpreter runs it);
    returns its exit code."""
    if multiprocessing.current_process().daemon:
        command = [sys.executable, "-c", "import sys, grading_task; grading_task._nbgrader_main(*sys.argv[1:])",
                   json.dumps(arguments), str(cwd), json.dumps(env), str(log), str(memory_gb)]
        return subprocess.run(command, env={**os.environ, "PYTHONPATH": _module_path()}).returncode
    child = _nbgrader_server().Process(target=_nbgrader_main, args=(arguments, str(cwd), env, str(log), memory_gb))
    child.start()
    child.join()
    return child.exitcode


def _nbgrader_server() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["nbgrader.apps.nbgraderapp", "grading_task"])
    return context


def _nbgrader_main(arguments: list[str] | str, cwd: str, env: dict[str, str] | str, log: str,
                   memory_gb: float | str) -> None:
    """Runs in the child: the state nbgrader's command line would start from (arguments may come
    as JSON text from a command line)."""
    arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    env = json.loads(env) if isinstance(env, str) else env
    memory_gb = float(memory_gb)
    output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.chdir(cwd)
    os.environ.update(env)
    os.environ["PATH"] = _venv_path()
    limit = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from nbgrader.apps.nbgraderapp import NbGraderApp

    sys.argv = ["nbgrader", *arguments]
    NbGraderApp.launch_instance(argv=arguments)


def _module_path() -> str:
    here = str(Path(__file__).resolve().parent)
    return os.pathsep.join(p for p in [here, os.environ.get("PYTHONPATH", "")] if p)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = (folder / relative).resolve()
        if folder.resolve() not in path.parents:
            raise ValueError(f"refusing to write {relative!r} outside the scratch folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _kernel_options(scratch: Path, limits: sandbox.Limits, sandboxed: bool) -> tuple[list[str], dict[str, str]]:
    """nbgrader options and environment that start the kernel in the sandbox, talking over Unix
    sockets in ``scratch/runtime``; plain kernel options where there is no sandbox."""
    runtime = scratch / "runtime"
    runtime.mkdir()
    options = ["--KernelManager.transport=ipc", f"--KernelManager.ip={runtime / 'kernel'}",
               f"--KernelManager.connection_file={runtime / 'kernel.json'}"]
    if not sandboxed:
        return options, {}
    sandbox.write_kernel_spec(scratch / "jupyter" / "kernels", limits)
    return options, {"JUPYTER_PATH": str(scratch / "jupyter")}


def _venv_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


