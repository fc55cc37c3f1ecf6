"""Integrated Gradients: completeness error against the number of steps, for each quadrature rule.

    python bench/bench_ig_quadrature.py            # Lite0, 5 photos at 224x224, black + blurred
    python bench/bench_ig_quadrature.py --quick    # smoke test: 2 photos at 64x64, steps 2, 4, 8

Completeness: the attributions sum to ``f(x) - f(x')``. With a finite number of steps the sum
is off by ``error`` (``integrated_gradients(..., return_error=True)``); the table reports the
*relative* error ``|error| / |f(x) - f(x')|`` for each rule and step count: the median, and the
largest, over every photo and baseline (EfficientNet-Lite0 with its ImageNet weights, each
photo's top class, baselines black and the photo blurred as ``metrics.deletion_insertion``'s
``baseline="blur"`` blurs it). No timing: every rule costs one gradient per step.

The verdict line answers the question behind ``method=``'s default: does Gauss-Legendre reach
the midpoint rule's error with a quarter of the steps (``gausslegendre`` at ``n / 4`` against
``riemann_middle`` at ``n``, medians, for every ``n`` in the table that has a quarter)?
Results are also written to bench/results/bench_ig_quadrature.json (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_ig_quadrature.json"
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle")
STEPS = (4, 8, 16, 32, 64)
QUICK_PHOTOS, QUICK_STEPS = ("chelsea", "coffee"), (2, 4, 8)


def photos_and_baselines(names: tuple[str, ...], size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The photos ``[P, 3, size, size]`` and the baselines by name, each ``[P, 3, size, size]``."""
    from torchvision.transforms.functional import gaussian_blur

    from saliencylab.images import sample_image, to_tensor
    from saliencylab.metrics.perturbation import BLUR_KERNEL_SIZE, BLUR_SIGMA

    images = torch.cat([to_tensor(sample_image(name), size=size) for name in names])
    blurred = gaussian_blur(images, [BLUR_KERNEL_SIZE] * 2, [BLUR_SIGMA] * 2)
    return images, {"black": torch.zeros_like(images), "blurred": blurred}


def relative_errors(model, images, baseline, targets, method: str, steps: int) -> list[float]:
    """``|attributions.sum() - (f(x) - f(x'))| / |f(x) - f(x')|`` per image."""
    from saliencylab.attribution import integrated_gradients

    _, error = integrated_gradients(
        model, images, targets, baseline=baseline, steps=steps, method=method, return_error=True
    )
    with torch.no_grad():
        logits_x, logits_base = model(images), model(baseline)
    rows = torch.arange(len(targets))
    change = logits_x[rows, targets] - logits_base[rows, targets]
    return (error.abs() / change.abs()).tolist()


def run(quick: bool) -> dict:
    from saliencylab.attribution.integrated_gradients import METHODS
    from saliencylab.models import load_model

    names, steps_list = (QUICK_PHOTOS, QUICK_STEPS) if quick else (PHOTOS, STEPS)
    model = load_model("efficientnet_lite0")
    images, baselines = photos_and_baselines(names, 64 if quick else 224)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    table: dict[str, dict[int, list[float]]] = {}
    print(f"{'rule':20} {'steps':>5} {'median':>9} {'max':>9}   relative completeness error "
          f"({len(names)} photos x {len(baselines)} baselines)", flush=True)
    for method in METHODS:
        table[method] = {}
        for steps in steps_list:
            if method == "riemann_trapezoid" and steps < 2:
                continue
            errors = [
                error
                for baseline in baselines.values()
                for error in relative_errors(model, images, baseline, targets, method, steps)
            ]
            table[method][steps] = errors
            print(f"{method:20} {steps:5d} {statistics.median(errors):9.2e} {max(errors):9.2e}",
                  flush=True)
    by_baseline = {
        name: {
            method: {steps: statistics.median(errors[i * len(names) : (i + 1) * len(names)])
                     for steps, errors in rows.items()}
            for method, rows in table.items()
        }
        for i, name in enumerate(baselines)
    }
    verdict = quarter_steps_verdict(table)
    print("\nMedian by baseline:")
    for name, methods in by_baseline.items():
        print(f"  {name:8} " + "  ".join(
            f"{m}: " + " ".join(f"{v:.1e}" for v in rows.values()) for m, rows in methods.items()
            if m in ("riemann_middle", "gausslegendre")))
    print("\n" + verdict["text"])
    return {"photos": list(names), "steps": list(steps_list), "table": table,
            "median_by_baseline": by_baseline, "verdict": verdict}


def quarter_steps_verdict(table: dict[str, dict[int, list[float]]]) -> dict:
    """Gauss-Legendre at ``n / 4`` steps against the midpoint rule at ``n`` (medians)."""
    middle, gauss = table["riemann_middle"], table["gausslegendre"]
    pairs = [(n, n // 4) for n in middle if n % 4 == 0 and n // 4 in gauss]
    comparisons = [
        (n, statistics.median(middle[n]), statistics.median(gauss[q])) for n, q in pairs
    ]
    reaches = bool(comparisons) and all(g <= m for _, m, g in comparisons)
    text = "Gauss-Legendre at a quarter of the steps vs the midpoint rule (medians): " + ", ".join(
        f"{n // 4} vs {n}: {g:.1e} vs {m:.1e}" for n, m, g in comparisons
    ) + f" -> {'reaches it' if reaches else 'does NOT reach it'}"
    return {"reaches_midpoint_error_at_quarter_steps": reaches, "text": text,
            "pairs": [{"steps": n, "middle": m, "gausslegendre_quarter": g} for n, m, g in comparisons]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 photos at 64x64, steps 2, 4, 8")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"saliencylab IG quadrature benchmark: CPU ({platform.processor() or platform.machine()}), "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, torch {torch.__version__}\n")
    results = run(args.quick)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"\nresults in {RESULTS}")


if __name__ == "__main__":
    main()
