"""Deletion / insertion AUC of each attribution method on EfficientNet-Lite0, and timings.

    python bench/bench_metrics.py [--size 224] [--steps 50] [--images chelsea coffee]

Deletion uses a black baseline (lower AUC = more faithful), insertion the blurred image
(higher = more faithful), both tracking the softmax probability of the predicted class.
Two random controls: ``random`` (white noise, one value per pixel) and ``random-smooth``
(7x7 noise upsampled, blobs as coarse as a Grad-CAM map). Also times the metrics themselves:
one deletion curve, pointing game, rank correlation and a randomization test of saliency.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from saliencylab import attribution
from saliencylab.images import sample_image, to_tensor
from saliencylab.metrics import (
    auc,
    deletion_curve,
    insertion_curve,
    pointing_game,
    randomization_test,
    rank_correlation,
)
from saliencylab.models import load_model


def methods(size: int) -> dict[str, Callable[..., torch.Tensor]]:
    def random_map(model, images, target=None):
        return torch.rand(images.shape[0], size, size, generator=torch.Generator().manual_seed(0))

    def smooth_random_map(model, images, target=None):
        cells = torch.rand(images.shape[0], 1, 7, 7, generator=torch.Generator().manual_seed(0))
        return F.interpolate(cells, size=(size, size), mode="bilinear")[:, 0]

    return {
        "saliency": attribution.saliency,
        "guided_backprop": attribution.guided_backprop,
        "smoothgrad": lambda m, x, target=None: attribution.smoothgrad(m, x, target, seed=0),
        "integrated_gradients": lambda m, x, target=None: attribution.integrated_gradients(
            m, x, target, reduce="sum_abs"),
        "gradcam": attribution.gradcam,
        "occlusion": lambda m, x, target=None: attribution.occlusion(m, x, target, window=32,
                                                                     stride=16),
        "random": random_map,
        "random-smooth": smooth_random_map,
    }


def timed(function: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", nargs="+", default=["chelsea", "coffee"])
    parser.add_argument("--methods", nargs="*", default=None,
                        help="only these rows of the table (none: timings only)")
    args = parser.parse_args()

    model = load_model("efficientnet_lite0")
    images = torch.cat([to_tensor(sample_image(name), size=args.size) for name in args.images])
    with torch.no_grad():
        probs = model(images).softmax(dim=1)
    targets = probs.argmax(dim=1)
    print(f"Lite0 at {args.size} px, {args.steps} steps, batch_size {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    for name, t, p in zip(args.images, targets, probs.max(dim=1).values):
        print(f"  {name}: class {t.item()} ({model.class_names[t]}), p = {p:.3f}")
    options = dict(target=targets, steps=args.steps, batch_size=args.batch_size)

    header = f"{'method':<22}" + "".join(f"{n + ' del':>14}{n + ' ins':>14}" for n in args.images)
    print(header + f"{'map s':>8}{'curves s':>10}")
    for name, method in methods(args.size).items():
        if args.methods is not None and name not in args.methods:
            continue
        maps, map_seconds = timed(lambda: method(model, images, target=targets))
        (deletion, insertion), curve_seconds = timed(lambda: (
            auc(deletion_curve(model, images, maps, baseline=0.0, **options)),
            auc(insertion_curve(model, images, maps, baseline="blur", **options)),
        ))
        cells = "".join(f"{d:>14.3f}{i:>14.3f}" for d, i in zip(deletion, insertion))
        print(f"{name:<22}{cells}{map_seconds:>8.2f}{curve_seconds:>10.2f}", flush=True)

    time_the_metrics(model, images, targets, args)


def time_the_metrics(model, images, targets, args) -> None:
    """Each metric's time, next to the bare work it cannot avoid (ratios survive a busy machine)."""
    maps = torch.rand(images.shape[0], args.size, args.size)
    options = dict(target=targets, steps=args.steps, batch_size=args.batch_size)
    _, curve_seconds = timed(lambda: deletion_curve(model, images, maps, **options))
    count = images.shape[0] * (args.steps + 1)
    same_work = images[:1].expand(count, -1, -1, -1).contiguous()
    with torch.inference_mode():
        _, bare_seconds = timed(lambda: [model(same_work[c]) for c in
                                         torch.arange(count).split(args.batch_size)])
    print(f"deletion_curve, {len(images)} images x {args.steps + 1} steps: {curve_seconds:.2f} s; "
          f"bare forward of {count} images in batches of {args.batch_size}: {bare_seconds:.2f} s "
          f"(ratio {curve_seconds / bare_seconds:.2f})")
    big_maps = torch.rand(64, args.size, args.size)
    _, seconds = timed(lambda: rank_correlation(big_maps, big_maps.flip(0)))
    print(f"rank_correlation of 64 maps: {seconds * 1000:.0f} ms")
    boxes = torch.tensor([[40, 40, 180, 180]] * 64)
    _, seconds = timed(lambda: pointing_game(big_maps, boxes, tolerance=15))
    print(f"pointing_game of 64 maps, tolerance 15: {seconds * 1000:.0f} ms")
    _, map_seconds = timed(lambda: attribution.saliency(model, images, target=targets))
    result, seconds = timed(lambda: randomization_test(model, images, attribution.saliency))
    steps = len(result.layers) + 1
    print(f"randomization_test of saliency: {seconds:.1f} s for {steps} maps; one saliency call: "
          f"{map_seconds:.2f} s (ratio {seconds / (steps * map_seconds):.2f})")
    print(result)


if __name__ == "__main__":
    main()
