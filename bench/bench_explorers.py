"""Interactive explorers: how long an update takes, first and cached.

    python bench/bench_explorers.py                 # torch's threads (2 on the course VM), 2 rounds
    python bench/bench_explorers.py --threads 1 --repeats 3
    python bench/bench_explorers.py --quick         # smoke test: 64 px, tiny counts

Each explorer of ``saliencylab.explorers`` runs at its default size on Chelsea with
EfficientNet-Lite0 (class visualisation: the digits CNN at 32 px, as lesson 08 uses it, and
Lite0 at 64 px with 30 steps). Timed, per explorer:

* **open**: making the explorer, which computes and draws its default setting (what a lesson
  cell costs before its static figure shows);
* **first**: a setting not seen before (the slowest of the defaults' options where it matters:
  SmoothGrad a new noise level, occlusion window 16 / stride 8, IG 64 steps);
* **reuse** (SmoothGrad only): another sample count at a noise level already computed;
* **cached**: a setting seen before (a dictionary look-up).

Every time is also given as a ratio to a **reference** timed in the same round: one forward +
backward pass of the same model on one image of the same size (so a loaded machine shifts both).
A round makes fresh explorers (nothing cached) and times the reference just before them; the
table gives the minimum over the rounds. Results also go to bench/results/bench_explorers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_explorers.json"
TARGET_SECONDS = 1.0


@dataclass
class Case:
    """One explorer: how to open it, which new setting to time, the reference's model and size."""

    name: str
    model: str
    size: int
    open: Callable[[], object]
    first: dict
    reuse: dict | None = None


@dataclass
class Row:
    name: str
    size: int
    reference_ms: float
    open_s: float
    first_s: float
    reuse_s: float | None
    cached_s: float

    def ratios(self) -> dict[str, float | None]:
        scale = self.reference_ms / 1000
        return {"open": self.open_s / scale, "first": self.first_s / scale,
                "reuse": None if self.reuse_s is None else self.reuse_s / scale,
                "cached": self.cached_s / scale}


def cases(quick: bool) -> tuple[dict[str, torch.nn.Module], list[Case]]:
    """The models by name, and the explorers to time."""
    from saliencylab import explorers
    from saliencylab.images import sample_image, to_tensor
    from saliencylab.models import load_model

    lite0, digits = load_model("efficientnet_lite0"), load_model("digits_cnn")
    models = {"lite0": lite0, "digits_cnn": digits}
    photo = to_tensor(sample_image("chelsea"))
    small = 64 if quick else None  # None: each explorer's own default size

    def sized(default: int) -> int:
        return small or default

    samples, steps = (4, (2, 4, 8)) if quick else (32, (2, 4, 8, 16, 32, 64))
    return models, [
        Case("smoothgrad", "lite0", sized(128),
             lambda: explorers.explore_smoothgrad(lite0, photo, max_samples=samples, size=sized(128)),
             first=dict(noise_level=0.3), reuse=dict(noise_level=0.3, samples=max(1, samples // 4))),
        Case("occlusion", "lite0", sized(112),
             lambda: explorers.explore_occlusion(lite0, photo, size=sized(112),
                                                 **(dict(windows=(16, 32), strides=(16,)) if quick else {})),
             first=dict(window=16, stride=16) if quick else dict(window=16, stride=8)),
        Case("gradcam", "lite0", sized(224),
             lambda: explorers.explore_gradcam(lite0, photo, size=small),
             first=dict(layer="features.blocks.4")),
        Case("integrated_gradients", "lite0", sized(128),
             lambda: explorers.explore_integrated_gradients(lite0, photo, steps=steps, size=sized(128)),
             first=dict(steps=steps[-1])),
        Case("class_visualization (digits CNN)", "digits_cnn", 32,
             lambda: explorers.explore_class_visualization(digits, 3, steps=10 if quick else 100),
             first=dict(l2_reg=1.0)),
        Case("class_visualization (Lite0)", "lite0", 64 if not quick else 32,
             lambda: explorers.explore_class_visualization(
                 lite0, 327, size=32 if quick else 64, steps=5 if quick else 30, stretch=True),
             first=dict(l2_reg=1.0)),
    ]


def reference_ms(model: torch.nn.Module, size: int, repeats: int = 5) -> float:
    """Milliseconds for one forward + backward pass of ``model`` on one ``size`` image (min)."""
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        start = time.perf_counter()
        inputs = image.clone().requires_grad_(True)
        torch.autograd.grad(model(inputs)[0].max(), inputs)
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def measure(case: Case, model: torch.nn.Module) -> Row:
    reference = reference_ms(model, case.size)
    open_s, explorer = timed(case.open)
    first_s, _ = timed(lambda: explorer.update(**case.first))
    reuse_s = timed(lambda: explorer.update(**case.reuse))[0] if case.reuse else None
    cached_s, _ = timed(lambda: explorer.update(**case.first))
    return Row(case.name, case.size, reference, open_s, first_s, reuse_s, cached_s)


def best_of(rows: list[Row]) -> Row:
    """Each column's minimum over the rounds of one case."""
    def low(values):
        values = [v for v in values if v is not None]
        return min(values) if values else None

    return Row(rows[0].name, rows[0].size, low(r.reference_ms for r in rows), low(r.open_s for r in rows),
               low(r.first_s for r in rows), low(r.reuse_s for r in rows), low(r.cached_s for r in rows))


def run(quick: bool, repeats: int) -> list[Row]:
    models, all_cases = cases(quick)
    rounds: dict[str, list[Row]] = {case.name: [] for case in all_cases}
    for _ in range(repeats):
        for case in all_cases:
            rounds[case.name].append(measure(case, models[case.model]))
    return [best_of(rows) for rows in rounds.values()]


def table(rows: list[Row]) -> str:
    def cell(seconds: float | None, ratio: float | None) -> str:
        return "-" if seconds is None else f"{seconds:6.2f} s ({ratio:4.0f}x)"

    lines = [f"{'explorer':34} {'px':>4} {'ref ms':>7}   {'open':>16} {'first':>16} {'reuse':>16} {'cached':>9}"]
    for row in rows:
        ratio = row.ratios()
        lines.append(f"{row.name:34} {row.size:4d} {row.reference_ms:7.1f}   "
                     f"{cell(row.open_s, ratio['open']):>16} {cell(row.first_s, ratio['first']):>16} "
                     f"{cell(row.reuse_s, ratio['reuse']):>16} {1000 * row.cached_s:6.2f} ms")
    slow = [f"{row.name} ({max(row.open_s, row.first_s):.2f} s)" for row in rows
            if max(row.open_s, row.first_s) > TARGET_SECONDS]
    lines.append(f"\nFirst updates above {TARGET_SECONDS:g} s: " + (", ".join(slow) if slow else "none"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 px, tiny counts (smoke test)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of fresh explorers (default 2)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"saliencylab explorers benchmark: CPU ({platform.processor() or platform.machine()}), "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}\n", flush=True)
    rows = run(args.quick, args.repeats)
    print(table(rows))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": torch.get_num_threads(), "quick": args.quick,
                                   "rows": [{**asdict(row), "ratios": row.ratios()} for row in rows]}, indent=1))
    print(f"\nresults in {RESULTS}")


if __name__ == "__main__":
    main()
