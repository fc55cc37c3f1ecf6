"""A Jupyter kernel that runs untrusted student code in a sandbox (bubblewrap, Linux).

The grader (nbgrader, outside) keeps the notebook, the hidden tests and the gradebook; only the
kernel runs inside. What the kernel sees:

- read-only: the system's programs and libraries, the Python installation, the course's venv and
  the saliencylab library (its trained weights included);
- read-write: its working folder (a scratch copy of one submission) and the folder of its
  connection file, through which it talks to the grader (ZMQ over Unix sockets: there is no
  network inside, not even the host's loopback);
- a private ``/tmp`` and ``$HOME``, a private process table, a minimal environment;
- nothing else: not ``solutions/``, other submissions, ``autograded/``, ``feedback/`` or the
  gradebook.

It runs as an unprivileged user (``nobody``), under limits on address space, processes and CPU
time, so that a fork bomb, a huge allocation or a busy loop ends that submission alone.

Use::

    spec_dir = write_kernel_spec(scratch / "kernels", Limits())   # JUPYTER_PATH=scratch
    # then run the kernel with transport "ipc" and its connection file in a scratch folder

``python tools/sandbox.py check`` says whether the sandbox works on this machine;
``python tools/sandbox.py install`` installs bubblewrap where it can (``make setup`` runs it).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

SANDBOX_UID = 65534  # nobody: the processes it may start are counted against this user
# Kernels graded at the same time each get their own user from this range, so that one kernel's
# fork bomb (the process limit counts every process of a user) cannot starve another's threads.
SANDBOX_UID_RANGE = range(200_000, 200_256)
UID_LOCKS = Path(tempfile.gettempdir()) / "saliencylab-sandbox-uids"
SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc")
PASSED_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
              "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "GLIBC_TUNABLES", "SALIENCYLAB_DEVICE",
              "PYDEVD_DISABLE_FILE_VALIDATION")
# The course kernel's malloc setting (tools/setup_kernel.py gives it to the students' kernel too):
# large tensors stay mapped instead of going back to the OS after every batch. Without it the
# graded lessons spent much of their time in page faults (see bench/README.md).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
# Runs its arguments as a child, so that the kernel's parent is this shell, not the sandbox's
# pid 1 (ipykernel shuts down when its parent is pid 1).
PARENT_SHELL = '"$0" "$@"; exit $?'


@dataclass(frozen=True)
class Limits:
    """What one sandboxed kernel may use."""

    memory_gb: float = 8.0  # address space (torch maps ~3 GB before any tensor)
    processes: int = 64
    cpu_seconds: int = 1800
    uid: int = SANDBOX_UID  # the user the kernel runs as (see claim_uid)


@contextmanager
def claim_uid() -> Iterator[int]:
    """A user id from :data:`SANDBOX_UID_RANGE` that no other kernel on this machine holds while
    the ``with`` block runs (an exclusive lock file per id, released even if this process dies)."""
    UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
    for uid in SANDBOX_UID_RANGE:
        handle = open(UID_LOCKS / str(uid), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield uid
        finally:
            handle.close()
        return
    raise RuntimeError(f"all {len(SANDBOX_UID_RANGE)} sandbox user ids are in use: grade fewer at a time")


def readonly_paths() -> list[Path]:
    """What the kernel needs to read: the Python installation, the venv and the library
    (found without importing it, which would import torch into the grader)."""
    spec = importlib.util.find_spec("saliencylab")
    if spec is None or spec.origin is None:
        raise RuntimeError("saliencylab is not installed in this Python: run `make setup`")
    package_parent = Path(spec.origin).resolve().parent.parent
    paths = [Path(sys.base_prefix).resolve(), Path(sys.prefix), Path(sys.prefix).resolve(), package_parent]
    return sorted({path for path in paths if path.exists()})


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run here (None when it can)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap sandboxes exist on Linux only, not on {sys.platform}"
    for program, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux"), ("prlimit", "util-linux")):
        if shutil.which(program) is None:
            return f"{program} is missing: install Debian's {package} (apt-get install {package})"
    probe = subprocess.run(sandbox_command(Path("/"), [], Limits(), ["true"]), capture_output=True, text=True)
    if probe.returncode != 0:
        return f"bubblewrap cannot start a sandbox here: {probe.stderr.strip()[:300]}"
    return None


def sandbox_command(workdir: Path, writable: list[Path], limits: Limits, command: list[str]) -> list[str]:
    """bwrap + setpriv + prlimit around ``command``, run in ``workdir``."""
    argv = ["bwrap", "--perms", "1777", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]
    for path in SYSTEM_DIRS:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    readonly = readonly_paths()
    mounted = [*readonly, *writable]
    inside_system = lambda p: any(str(p) == d or str(p).startswith(d + "/") for d in SYSTEM_DIRS)
    parents = {p for path in mounted for p in path.parents if str(p) not in ("/", "/tmp") and not inside_system(p)}
    for parent in sorted(parents):
        argv += ["--perms", "0755", "--dir", str(parent)]  # bwrap would make them 0700: unreadable
    for path in readonly:
        argv += ["--ro-bind", str(path), str(path)]
    for path in writable:
        argv += ["--bind", str(path), str(path)]
    argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--die-with-parent", "--new-session", "--clearenv", "--chdir", str(workdir),
             "--setenv", "HOME", "/tmp"]
    for name in PASSED_ENV:
        if name in os.environ:
            argv += ["--setenv", name, os.environ[name]]
    argv += ["--", "setpriv", f"--reuid={limits.uid}", f"--regid={limits.uid}", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all",
             "prlimit", f"--as={int(limits.memory_gb * 2**30)}", f"--nproc={limits.processes}",
             f"--cpu={limits.cpu_seconds}", "--",
             "/bin/sh", "-c", PARENT_SHELL, *command]
    return argv


def write_kernel_spec(folder: Path, limits: Limits, name: str = "python3") -> Path:
    """A kernel spec ``folder/name/kernel.json`` whose kernel runs sandboxed (set
    ``JUPYTER_PATH`` to ``folder``'s parent). Returns the spec's folder."""
    spec_dir = folder / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, str(Path(__file__).resolve()), "launch", json.dumps(asdict(limits)),
                 "{connection_file}"],
        "display_name": "Python 3 (sandboxed grading)",
        "language": "python",
        # a signal would reach bwrap, not the kernel: interrupt (a cell's timeout) by message
        "interrupt_mode": "message",
        "env": {"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES") or MALLOC_TUNABLES},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def launch(limits: Limits, connection_file: Path, kernel_arguments: list[str]) -> None:
    """Start the sandboxed kernel (runs outside, as the grader; replaces this process).

    The kernel's working folder is this process's (jupyter_client starts it in the notebook's
    folder); the sandbox user gets write access to it and to the connection file's folder.
    """
    workdir = Path.cwd()
    runtime = connection_file.parent
    for folder in (workdir, runtime):
        folder.chmod(0o1777)
    connection_file.chmod(0o644)
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection_file), *kernel_arguments]
    argv = sandbox_command(workdir, [workdir, runtime], limits, kernel)
    os.execvp(argv[0], argv)


def install() -> str | None:
    """Install bubblewrap with apt-get where it is missing and we are root on Debian/Ubuntu.
    Returns why the sandbox is still unavailable, or None."""
    if sys.platform.startswith("linux") and shutil.which("bwrap") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print("installing bubblewrap (the grading sandbox) with apt-get ...", flush=True)
            quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
            subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
            subprocess.run(["apt-get", "install", "-y", "-qq", "bubblewrap"], check=False, **quiet)
        else:
            print("bubblewrap is missing: ask an administrator to install it (Debian/Ubuntu: "
                  "sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap).")
    return unavailable_reason()


def main(args: list[str]) -> int:
    if args[:1] == ["launch"] and len(args) >= 3:  # jupyter_client may append kernel options
        launch(Limits(**json.loads(args[1])), Path(args[2]).resolve(), args[3:])
        return 1  # not reached
    if args[:1] in (["check"], ["install"]):
        reason = install() if args[0] == "install" else unavailable_reason()
        print("sandbox: on (bubblewrap)" if reason is None else f"sandbox: OFF: {reason}")
        return 0 if reason is None else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
