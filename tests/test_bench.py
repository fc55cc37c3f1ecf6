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


# ---------------------------------------------------------------- bench_occlusion.py


def load_bench(name: str):
    path = BENCH.parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_occlusion_bench_quick_run_prints_speed_ups_and_layer_shares() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH.parent / "bench_occlusion.py"), "--quick", "--threads", "1",
         "--models", "vgg11,lite0"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model") and "x bare" in line)
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[0] for row in rows] == ["vgg11", "lite0"]
    for row in rows:
        assert 0 < float(row[5]) <= 1  # work
        assert float(row[-1]) <= 1e-4  # the two paths' maps agree
    shares = [line.split() for line in lines if line.startswith("  net.features.")]
    assert shares and all(0 < float(share[-2]) <= 1 for share in shares)
    assert float(shares[-1][-2]) == 1.0  # the last map is recomputed whole


def test_occlusion_bench_goal_verdicts() -> None:
    bench = load_bench("bench_occlusion")

    def row(model, bare, incremental):
        return bench.Row(model, 625, 3, 64, bare, bare, incremental, 0.2, 0.0)

    assert bench.check_goals([row("vgg11", 10.0, 2.5), row("lite0", 10.0, 6.0)]) == [
        "  [met] vgg11: incremental >= 3x faster than the bare forward passes (4.00x)",
        "  [MISSED] lite0: incremental >= 2x faster than the bare forward passes (1.67x)",
    ]
    assert bench.window_starts(224, 32, 8)[-1] == (192, 192) and len(bench.window_starts(224, 32, 8)) == 625
    assert bench.window_starts(44, 16, 12)[-1] == (36, 36)  # Captum's clipped last window


# ---------------------------------------------------------------- bench_ig_quadrature.py


def test_ig_quadrature_verdict_compares_gauss_legendre_at_a_quarter_of_the_steps() -> None:
    bench = load_bench("bench_ig_quadrature")
    table = {
        "riemann_middle": {4: [0.4], 8: [0.2], 16: [0.1], 32: [0.05]},
        "gausslegendre": {4: [0.09], 8: [0.04], 16: [0.01], 32: [0.001]},
    }
    verdict = bench.quarter_steps_verdict(table)
    assert [pair["steps"] for pair in verdict["pairs"]] == [16, 32]
    assert verdict["reaches_midpoint_error_at_quarter_steps"] is True
    table["gausslegendre"][8] = [0.07]
    assert bench.quarter_steps_verdict(table)["reaches_midpoint_error_at_quarter_steps"] is False


def test_ig_quadrature_quick_run_prints_every_rule() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH.parent / "bench_ig_quadrature.py"), "--quick", "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    rules = {line.split()[0] for line in completed.stdout.splitlines() if line.startswith(("riemann", "gauss"))}
    assert rules == {"riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right", "gausslegendre"}
    assert "Gauss-Legendre at a quarter of the steps" in completed.stdout
