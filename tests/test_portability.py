"""Every solution notebook tells the same story under a second numeric configuration.

The stored outputs are made, and checked by the main nbval run, with one torch thread and the
CPU's best code paths. Another laptop, Colab or CI machine rounds differently: other vector
widths in ATen's kernels, other blockings in oneDNN's convolutions, other thread splits of the
reductions. No setting reproduces another CPU bit for bit, but running every notebook again
with all three changed at once shows whether a printed number or a conclusion rides on the last
bits: it must pass nbval here as well, with its assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import nbtools  # noqa: E402

# Two threads (the main run uses one), ATen's scalar kernels instead of AVX2/AVX-512, and oneDNN
# limited to SSE4.1: each is a valid configuration of a real machine. OMP_WAIT_POLICY=PASSIVE
# changes no result; it stops idle OpenMP threads from spinning, which made these two threads
# 4x slower while the other xdist worker was busy.
PORTABILITY_ENV = {
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "OMP_WAIT_POLICY": "PASSIVE",
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}

# One group: the notebooks run one after another on one worker, so the two threads never meet a
# second two-thread kernel on a 2-core machine.
pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("portability")]


def nbval_under(env: dict[str, str], notebook: Path) -> subprocess.CompletedProcess:
    """nbval of one notebook (the course's pytest.ini options) in a fresh process with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "--no-header", "--durations=0",
         str(notebook.relative_to(ROOT))],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.parametrize("notebook", nbtools.solution_notebooks(), ids=lambda path: path.stem)
def test_solution_passes_nbval_under_another_numeric_configuration(notebook):
    result = nbval_under(PORTABILITY_ENV, notebook)
    settings = " ".join(f"{key}={value}" for key, value in PORTABILITY_ENV.items())
    assert result.returncode == 0, (
        f"{notebook.name} differs from its stored outputs (or an assertion failed) under "
        f"{settings}: a printed number or a conclusion depends on the machine's rounding. "
        f"Round it to what it means, or assert the conclusion with its real margin.\n"
        + result.stdout[-6000:] + result.stderr[-2000:]
    )
    assert " passed" in result.stdout, f"nbval ran no cell of {notebook.name}:\n{result.stdout[-2000:]}"


def test_the_configuration_really_changes_the_arithmetic():
    # Guards against a torch that ignores these variables: a convolution's last bits must move.
    probe = (
        "import torch; torch.manual_seed(0); "
        "x = torch.rand(4, 32, 56, 56); conv = torch.nn.Conv2d(32, 64, 3); "
        "y = torch.nn.functional.softmax(conv(x).flatten(1), dim=1); "
        "print(torch.get_num_threads(), repr(y.double().sum(dim=1).tolist()), repr(conv(x).sum().item()))"
    )
    outputs = [
        subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env},
                       capture_output=True, text=True, check=True).stdout
        for env in ({"OMP_NUM_THREADS": "1"}, PORTABILITY_ENV)
    ]
    assert outputs[0].split()[0] == "1" and outputs[1].split()[0] == "2"
    assert outputs[0] != outputs[1]
