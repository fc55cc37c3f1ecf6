"""Incremental occlusion: speed-up over the bare forward passes, and what each layer recomputes.

    python bench/bench_occlusion.py                  # VGG11, VGG16 (random weights), Lite0; 224 px
    python bench/bench_occlusion.py --threads 1      # on a busy machine
    python bench/bench_occlusion.py --quick          # smoke test: 64 px, window 16, stride 8

For each model, on Chelsea at 224x224, window 32, stride 8 (625 windows), its top class:

* **bare**: ``model(x)`` under ``torch.inference_mode`` on contiguous batches of the library's
  default batch size, for all 625 occluded images and the clean one: what a hand-written loop
  costs, the reference of the speed-ups.
* **ordinary**: ``occlusion(..., incremental=False)`` (every occluded image through the whole
  model, channels_last batches).
* **incremental**: ``occlusion(..., incremental=True)``.

Each is timed ``--repeats`` times, interleaved (bare, ordinary, incremental), and the minimum is
kept. The speed-ups are ratios within this process, so they hold on a machine that is slower
or busier overall; seconds are printed for the record. The maps of the two occlusion paths are
compared too (max |difference| / max |map|).

Then, per layer with a kernel (convolution, pooling), the share of its output positions that
the incremental pass recomputed, averaged over all windows (a border window's box is clipped,
so it recomputes less than the middle one), and the multiply-adds of the whole pass against a
full forward pass (``work``). Results are also written to bench/results/bench_occlusion.json
(ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_occlusion.json"
MODELS = {"vgg11": "vgg11", "vgg16": "vgg16", "lite0": "efficientnet_lite0"}
GOALS = {"vgg11": 3.0, "vgg16": 3.0, "lite0": 2.0}  # incremental vs bare, at window 32 stride 8


@dataclass(frozen=True)
class Scale:
    size: int
    window: int
    stride: int
    repeats: int


FULL = Scale(size=224, window=32, stride=8, repeats=2)
QUICK = Scale(size=64, window=16, stride=8, repeats=1)


@dataclass
class Row:
    model: str
    windows: int
    bare_batch: int
    incremental_batch: int
    bare_s: float
    ordinary_s: float
    incremental_s: float
    work: float  # multiply-adds recomputed / full pass (probe of the middle window)
    map_difference: float

    @property
    def vs_bare(self) -> float:
        return self.bare_s / self.incremental_s

    @property
    def vs_ordinary(self) -> float:
        return self.ordinary_s / self.incremental_s


def load(key: str, size: int) -> tuple[torch.nn.Module, torch.Tensor, int]:
    from saliencylab.images import sample_image, to_tensor
    from saliencylab.models import load_model

    name = MODELS[key]
    model = load_model(name, pretrained=name == "efficientnet_lite0")
    image = to_tensor(sample_image("chelsea"), size=size)
    with torch.no_grad():
        target = int(model(image).argmax())
    return model, image, target


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(key: str, scale: Scale) -> tuple[Row, list[dict]]:
    from saliencylab._core import auto_batch_size
    from saliencylab.attribution import occlusion

    model, image, target = load(key, scale.size)
    w, s = scale.window, scale.stride
    starts = window_starts(scale.size, w, s)
    bare_batch = auto_batch_size(model, image)
    total = len(starts) + 1  # every occluded image and the clean one

    def bare() -> None:
        with torch.inference_mode():
            batch = image.expand(bare_batch, -1, -1, -1).contiguous()
            for first in range(0, total, bare_batch):
                model(batch[: min(bare_batch, total - first)])

    maps = {}

    def ordinary() -> None:
        maps["ordinary"] = occlusion(model, image, target, window=w, stride=s, incremental=False)

    def incremental() -> None:
        maps["incremental"] = occlusion(model, image, target, window=w, stride=s, incremental=True)

    best = {"bare": float("inf"), "ordinary": float("inf"), "incremental": float("inf")}
    for _ in range(scale.repeats):
        for name, call in (("bare", bare), ("ordinary", ordinary), ("incremental", incremental)):
            best[name] = min(best[name], seconds(call))
    difference = float((maps["incremental"] - maps["ordinary"]).abs().max()
                       / maps["ordinary"].abs().max())
    work, per_pass, layers = recomputed(model, image, starts, w)
    row = Row(key, len(starts), bare_batch, per_pass, best["bare"], best["ordinary"],
              best["incremental"], work, difference)
    return row, layers


def window_starts(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The top-left corners occlusion uses (Captum's rule, a last clipped window included)."""
    count = -(-(size - window) // stride) + 1
    axis = [i * stride for i in range(count)]
    return [(y, x) for y in axis for x in axis]


def recomputed(
    model: torch.nn.Module, image: torch.Tensor, starts: list[tuple[int, int]], window: int
) -> tuple[float, int, list[dict]]:
    """(work of the middle window, windows per pass, per-layer shares over all windows)."""
    from saliencylab._core import ACTIVATION_BUDGET, MAX_AUTO_BATCH_SIZE
    from saliencylab.attribution._incremental import build_plan, occluded_patch, probe

    plan, why_not = build_plan(model)
    if plan is None:
        raise RuntimeError(f"the incremental path cannot walk {type(model).__name__}: {why_not}")
    fill = torch.zeros_like(image)
    with torch.inference_mode():
        _, cache = plan.run_clean(image)
        middle = probe(plan, cache, occluded_patch(image, fill, [starts[len(starts) // 2]], (window,) * 2))
        per_pass = max(1, min(MAX_AUTO_BATCH_SIZE, ACTIVATION_BUDGET // middle.copy_bytes))
        totals: dict[str, list[float]] = {}
        for first in range(0, len(starts), per_pass):
            chunk = starts[first : first + per_pass]
            trace: list = []
            plan.run_patched(cache, occluded_patch(image, fill, chunk, (window,) * 2), trace)
            for layer in trace:
                entry = totals.setdefault(layer.name, [0.0, 0.0, layer.map_positions])
                entry[0] += layer.fraction * len(chunk)
                entry[1] += len(chunk)
    layers = [
        {"layer": name, "map_positions": int(map_positions), "mean_fraction": share / count,
         "middle_fraction": next(l.fraction for l in middle.layers if l.name == name)}
        for name, (share, count, map_positions) in totals.items()
    ]
    return middle.work_fraction, per_pass, layers


HEADER = (f"{'model':7} {'windows':>7} {'bare s':>8} {'ordinary s':>10} {'increm. s':>9} "
          f"{'work':>5} {'x bare':>7} {'x ordin.':>8}  {'batches':>12}  map diff")


def format_row(row: Row) -> str:
    return (f"{row.model:7} {row.windows:7d} {row.bare_s:8.2f} {row.ordinary_s:10.2f} "
            f"{row.incremental_s:9.2f} {row.work:5.2f} {row.vs_bare:7.2f} {row.vs_ordinary:8.2f}  "
            f"{f'@{row.bare_batch} / @{row.incremental_batch}':>12}  {row.map_difference:.1e}")


def format_layers(key: str, layers: list[dict]) -> list[str]:
    lines = [f"\n{key}: share of each layer's output positions recomputed "
             "(mean over all windows; the middle window)"]
    for layer in layers:
        side = round(layer["map_positions"] ** 0.5)
        lines.append(f"  {layer['layer']:38} {side:4d}^2  {layer['mean_fraction']:6.3f}  "
                     f"{layer['middle_fraction']:6.3f}")
    return lines


def check_goals(rows: list[Row]) -> list[str]:
    return [
        f"  [{'met' if row.vs_bare >= GOALS[row.model] else 'MISSED'}] {row.model}: incremental "
        f">= {GOALS[row.model]:.0f}x faster than the bare forward passes ({row.vs_bare:.2f}x)"
        for row in rows if row.model in GOALS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 px, window 16, stride 8, 1 repeat")
    parser.add_argument("--models", default="vgg11,vgg16,lite0", help="comma-separated: vgg11, vgg16, lite0")
    parser.add_argument("--repeats", type=int, help="timing rounds (min is kept)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = QUICK if args.quick else FULL
    if args.repeats:
        scale = Scale(**{**asdict(scale), "repeats": args.repeats})
    keys = [key.strip() for key in args.models.split(",") if key.strip()]
    unknown = set(keys) - set(MODELS)
    if unknown:
        sys.exit(f"unknown model(s) {sorted(unknown)}: choose from {sorted(MODELS)}")
    print(f"saliencylab incremental occlusion benchmark: CPU ({platform.processor() or platform.machine()}), "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    print(f"{scale.size}x{scale.size} Chelsea, window {scale.window}, stride {scale.stride}, "
          f"min of {scale.repeats} run(s)\n")
    print(HEADER, flush=True)
    rows, layer_tables = [], {}
    for key in keys:
        row, layers = measure(key, scale)
        rows.append(row)
        layer_tables[key] = layers
        print(format_row(row), flush=True)
    if not args.quick:
        print("\nGoals:")
        for line in check_goals(rows):
            print(line)
    for key, layers in layer_tables.items():
        print("\n".join(format_layers(key, layers)))
    results = {"scale": asdict(scale), "threads": torch.get_num_threads(),
               "rows": [{**asdict(row), "vs_bare": row.vs_bare, "vs_ordinary": row.vs_ordinary}
                        for row in rows],
               "layers": layer_tables}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}; results in {RESULTS}")


if __name__ == "__main__":
    main()
