"""Prepare the venv's Jupyter for students (run by `make setup`).

- Registers this venv's interpreter as the ``python3`` kernel (nbgrader copies the kernel name
  from the source notebooks, and nbval runs with the current environment).
- Gives the kernel the malloc setting measured in bench/ (large tensors stay mapped instead of
  being returned to the OS after every batch; see bench/README.md).
- Hides nbgrader's instructor menus (formgrader, create assignment, course list) from students;
  instructors use the command line (`make release`, `make grade`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sandbox import MALLOC_TUNABLES

INSTRUCTOR_PLUGINS = [
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
]
BIN = Path(sys.executable).parent


def register_kernel() -> Path:
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3",
         "--display-name", "Python 3 (saliencylab)"],
        check=True, capture_output=True,
    )
    spec_file = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["argv"][0] = sys.executable
    spec.setdefault("env", {})["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    spec_file.write_text(json.dumps(spec, indent=1))
    return spec_file


def hide_instructor_menus() -> None:
    for plugin in INSTRUCTOR_PLUGINS:
        subprocess.run([str(BIN / "jupyter"), "labextension", "disable", "--level=sys_prefix", plugin],
                       check=True, capture_output=True)
    subprocess.run([str(BIN / "jupyter"), "server", "extension", "disable", "--sys-prefix",
                    "nbgrader.server_extensions.formgrader"], check=True, capture_output=True)


if __name__ == "__main__":
    print("kernel:", register_kernel())
    hide_instructor_menus()
    print("nbgrader instructor menus hidden from students:", ", ".join(INSTRUCTOR_PLUGINS))
