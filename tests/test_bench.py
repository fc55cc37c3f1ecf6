"""The attribution benchmark runs (--quick) and prints its table; its bookkeeping is right.

Speed itself is not tested here (wall-clock numbers depend on the machine): run
``make bench`` and read bench/README.md.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_attribution.py"
METHODS = ["saliency", "guided_backprop", "smoothgrad", "gradcam", "integrated_gradients", "occlusion"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attribution", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_table_for_every_method_and_model() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model") and "ours/Captum" in line)
    rows = [line.split() for line in lines[header + 1 : header + 13]]
    assert [(row[0], row[1]) for row in rows] == [(m, name) for m in ("lite0", "alexnet") for name in METHODS]
    for row in rows:
        ratios = [float(row[-2]), float(row[-1])]
        assert all(0 < ratio < 100 for ratio in ratios)
    assert "Targets:" in completed.stdout and "no method slower than Captum" in completed.stdout


def test_target_verdicts(bench) -> None:
    def row(method, ours, captum, bare, compare=True):
        return bench.Timing("lite0", method, ours, captum, "-", bare, "-", compare)

    lines = bench.check_targets([
        row("saliency", 1.0, 1.1, 0.9, compare=False),
        row("smoothgrad 50", 1.2, 1.3, 1.0),
        row("occlusion 32/8", 1.0, 1.5, 0.95),
    ])
    assert lines == [
        "  [met] no method slower than Captum (worst: lite0 smoothgrad 50 0.92x)",
        "  [MISSED] lite0 smoothgrad 50 within 1.15x of the bare passes (1.20x)",
        "  [met] lite0 occlusion 32/8 within 1.15x of the bare passes (1.05x)",
        "  [met] lite0 occlusion 32/8 >= 1.3x faster than Captum (1.50x)",
    ]


def test_memory_and_sweep_children_report_numbers(bench) -> None:
    memory = bench.memory_child(
        {"model": "lite0", "size": 64, "quick": True, "method": "occlusion", "impl": "ours"}
    )
    assert memory["peak_growth_mb"] >= 0
    sweep = bench.sweep_child({"quick": True})
    assert set(sweep) == {
        "forward contiguous @4", "forward channels_last @4", "occlusion @4", "smoothgrad 4 @4"
    }
    assert all(value > 0 for value in sweep.values())
