"""Speed and peak memory of saliencylab's attribution methods against Captum and the bare passes.

    python bench/bench_attribution.py              # full run: Lite0 + AlexNet at 224x224
    python bench/bench_attribution.py --quick      # smoke test: 64x64, tiny counts, time table only
    python bench/bench_attribution.py --no-memory --no-glibc --models lite0

Three parts (bench/README.md explains how to read them):

1. Time, in this process, CPU: every method (ours) against Captum's equivalent at Captum's best
   batch setting (each setting is tried once; the fastest is re-timed) and against the bare
   passes a hand-written loop would make for the same number of images: ``model(x)`` under
   ``torch.inference_mode`` for occlusion, ``model(x)`` + ``torch.autograd.grad`` w.r.t. the
   input for the gradient methods, contiguous batches of the method's default batch size.
   Each call is timed ``--repeats`` times, interleaved (ours, bare, Captum), and the minimum is
   kept, which is the least noisy statistic on a shared machine.
2. Peak memory, one fresh subprocess per measurement (so no allocator cache from an earlier
   call hides anything): after loading the model and one warm-up forward of one image, the
   kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), the call runs, and the
   report is the peak resident set size during the call (``VmHWM``) minus the RSS before it.
   It counts everything the process touched (tensors, allocator caches, Python objects), not
   just torch tensors. (Without ``clear_refs`` it falls back to ``ru_maxrss`` growth, which
   can read 0 when loading the model peaked higher.)
   Repeated for occlusion at two strides and SmoothGrad / IG at two sample counts with the same
   batch size: the peak should not move.
3. ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:trim_threshold=...``: the same small sweep
   (bare forwards, occlusion, SmoothGrad at several batch sizes) in two subprocesses, with and
   without the variable (it must be set before the process starts). The occlusion default
   batch size is chosen from the run without it.

Results are also written to bench/results/bench_attribution.json (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

GLIBC_TUNABLES = (
    "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
)
RESULTS = Path(__file__).resolve().parent / "results" / "bench_attribution.json"


@dataclass(frozen=True)
class Scale:
    """Problem sizes of one run."""

    size: int
    samples: int  # SmoothGrad noisy copies
    steps: int  # Integrated Gradients path points
    window: int
    stride: int
    repeats: int
    captum_batches: tuple[int, ...]  # Captum batch settings tried
    sweep_batches: tuple[int, ...]  # batch sizes of the glibc / default-batch sweep
    memory_pairs: dict[str, tuple[int, int]] = field(default_factory=dict)


FULL = Scale(
    size=224,
    samples=50,
    steps=50,
    window=32,
    stride=8,
    repeats=3,
    captum_batches=(4, 8, 16, 32),
    sweep_batches=(4, 8, 16, 32),
    memory_pairs={"occlusion stride": (16, 8), "smoothgrad samples": (25, 100), "ig steps": (25, 100)},
)
QUICK = Scale(
    size=64,
    samples=4,
    steps=4,
    window=32,
    stride=16,
    repeats=1,
    captum_batches=(4,),
    sweep_batches=(4,),
    memory_pairs={"occlusion stride": (32, 16)},
)
MODELS = {"lite0": "efficientnet_lite0", "alexnet": "alexnet"}


# ---------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One method: our call, Captum's calls by batch setting, and the bare passes."""

    name: str
    ours: Callable[[], object]
    captum: dict[str, Callable[[], object]]
    bare: Callable[[], object]
    bare_what: str
    compare_to_bare: bool = False  # held to the 1.15x-of-bare target


def load(model_key: str, size: int) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """The model (Lite0 with its weights, AlexNet with random ones), chelsea, and the top class."""
    from saliencylab.images import sample_image, to_tensor
    from saliencylab.models import load_model

    name = MODELS[model_key]
    model = load_model(name, pretrained=name == "efficientnet_lite0")
    image = to_tensor(sample_image("chelsea"), size=size)
    with torch.no_grad():
        target = int(model(image).argmax())
    return model, image, target


def build_cases(model: torch.nn.Module, image: torch.Tensor, target: int, scale: Scale) -> list[Case]:
    import captum.attr as ca

    from saliencylab import attribution as sl
    from saliencylab.attribution._base import auto_batch_size
    from saliencylab.models import default_layer

    layer = default_layer(model)
    default_batch = auto_batch_size(model, image)  # what our methods use when batch_size=None
    positions = _positions(scale.size, scale.window, scale.stride)
    spread = float(image.max() - image.min())
    w, s = scale.window, scale.stride

    def one_pass() -> None:
        forward_backward(model, image, target, 1, 1)

    def captum_gradcam() -> torch.Tensor:
        maps = ca.LayerGradCam(model, layer).attribute(image, target=target, relu_attributions=True)
        return ca.LayerAttribution.interpolate(maps, image.shape[-2:], "bilinear")

    return [
        Case("saliency", lambda: sl.saliency(model, image, target),
             {"-": lambda: ca.Saliency(model).attribute(image, target=target, abs=True)},
             one_pass, "1 fwd+bwd"),
        Case("guided_backprop", lambda: sl.guided_backprop(model, image, target),
             {"-": lambda: ca.GuidedBackprop(model).attribute(image, target=target)},
             one_pass, "1 fwd+bwd"),
        Case(f"smoothgrad {scale.samples}",
             lambda: sl.smoothgrad(model, image, target, samples=scale.samples, seed=0),
             {f"nt_samples_batch_size={k}": _bind(
                 lambda k: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                     image, nt_type="smoothgrad", nt_samples=scale.samples, nt_samples_batch_size=k,
                     stdevs=0.15 * spread, target=target, abs=True), k)
              for k in _settings(scale.captum_batches, scale.samples)},
             lambda: forward_backward(model, image, target, scale.samples, default_batch),
             f"{scale.samples} fwd+bwd @{default_batch}", compare_to_bare=True),
        Case("gradcam", lambda: sl.gradcam(model, image, target, layer=layer),
             {"-": captum_gradcam}, one_pass, "1 fwd+bwd"),
        Case(f"integrated_gradients {scale.steps}",
             lambda: sl.integrated_gradients(model, image, target, steps=scale.steps),
             {f"internal_batch_size={k}": _bind(
                 lambda k: ca.IntegratedGradients(model).attribute(
                     image, baselines=0.0, target=target, n_steps=scale.steps,
                     method="riemann_middle", internal_batch_size=k), k)
              for k in _settings(scale.captum_batches, scale.steps)},
             lambda: forward_backward(model, image, target, scale.steps, default_batch),
             f"{scale.steps} fwd+bwd @{default_batch}", compare_to_bare=True),
        Case(f"occlusion {w}/{s}",
             lambda: sl.occlusion(model, image, target, window=w, stride=s),
             {f"perturbations_per_eval={k}": _bind(
                 lambda k: ca.Occlusion(model).attribute(
                     image, sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=0.0,
                     target=target, perturbations_per_eval=k), k)
              for k in _settings(scale.captum_batches, positions)},
             lambda: forward_only(model, image, positions + 1, default_batch),
             f"{positions + 1} fwd @{default_batch}", compare_to_bare=True),
    ]


def _bind(function: Callable[[int], object], k: int) -> Callable[[], object]:
    return lambda: function(k)


def _settings(batches: tuple[int, ...], count: int) -> list[int]:
    return sorted({min(k, count) for k in batches})


def _positions(size: int, window: int, stride: int) -> int:
    return (math.ceil((size - window) / stride) + 1) ** 2


def forward_backward(model: torch.nn.Module, image: torch.Tensor, target: int, count: int, batch: int) -> None:
    """``count`` input gradients in batches of ``batch``: what SmoothGrad/IG cannot beat."""
    for start in range(0, count, batch):
        inputs = image.expand(min(batch, count - start), -1, -1, -1).clone().requires_grad_(True)
        torch.autograd.grad(model(inputs)[:, target].sum(), inputs)


def forward_only(model: torch.nn.Module, image: torch.Tensor, count: int, batch: int) -> None:
    """``count`` forwards in contiguous batches of ``batch`` under inference_mode."""
    with torch.inference_mode():
        for start in range(0, count, batch):
            model(image.expand(min(batch, count - start), -1, -1, -1).contiguous())


# ---------------------------------------------------------------------------------- timing
def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclass
class Timing:
    model: str
    method: str
    ours: float
    captum: float
    captum_setting: str
    bare: float
    bare_what: str
    compare_to_bare: bool

    @property
    def vs_captum(self) -> float:
        return self.ours / self.captum

    @property
    def vs_bare(self) -> float:
        return self.ours / self.bare


def time_case(case: Case, repeats: int) -> tuple[float, float, str, float]:
    """Min-of-``repeats`` seconds of ours, of Captum's best setting, and of the bare passes.

    The first round tries every Captum setting; later rounds re-time only the best so far.
    Calls are interleaved so that a burst of load from elsewhere hits all of them alike.
    """
    ours, bare = math.inf, math.inf
    captum = {label: math.inf for label in case.captum}
    for round_ in range(repeats):
        ours = min(ours, seconds(case.ours))
        bare = min(bare, seconds(case.bare))
        labels = case.captum if round_ == 0 else [min(captum, key=captum.get)]
        for label in labels:
            captum[label] = min(captum[label], seconds(case.captum[label]))
    best = min(captum, key=captum.get)
    return ours, captum[best], best, bare


def run_timings(model_keys: list[str], scale: Scale) -> list[Timing]:
    rows = []
    for key in model_keys:
        model, image, target = load(key, scale.size)
        for case in build_cases(model, image, target, scale):
            case.ours()  # warm-up: first-call costs (lazy init, allocator) are not the method's
            ours, captum, setting, bare = time_case(case, scale.repeats)
            row = Timing(key, case.name, ours, captum, setting, bare, case.bare_what, case.compare_to_bare)
            rows.append(row)
            print(format_timing(row), flush=True)
    return rows


TIMING_HEADER = (
    f"{'model':8} {'method':24} {'ours s':>8} {'Captum s':>9}  {'Captum setting':25} "
    f"{'bare s':>8}  {'bare passes':20} {'ours/Captum':>11} {'ours/bare':>9}"
)


def format_timing(row: Timing) -> str:
    return (
        f"{row.model:8} {row.method:24} {row.ours:8.3f} {row.captum:9.3f}  {row.captum_setting:25} "
        f"{row.bare:8.3f}  {row.bare_what:20} {row.vs_captum:11.2f} {row.vs_bare:9.2f}"
    )


def check_targets(rows: list[Timing]) -> list[str]:
    lines = []
    slowest = max(rows, key=lambda r: r.vs_captum)
    lines.append(_verdict(slowest.vs_captum <= 1.0,
                          f"no method slower than Captum (worst: {slowest.model} {slowest.method} "
                          f"{slowest.vs_captum:.2f}x)"))
    for row in rows:
        if row.compare_to_bare:
            lines.append(_verdict(row.vs_bare <= 1.15,
                                  f"{row.model} {row.method} within 1.15x of the bare passes ({row.vs_bare:.2f}x)"))
        if row.method.startswith("occlusion"):
            lines.append(_verdict(1 / row.vs_captum >= 1.3,
                                  f"{row.model} {row.method} >= 1.3x faster than Captum ({1 / row.vs_captum:.2f}x)"))
    return lines


def _verdict(ok: bool, text: str) -> str:
    return f"  [{'met' if ok else 'MISSED'}] {text}"


# ---------------------------------------------------------------------------------- memory
def memory_child(spec: dict) -> dict:
    """Runs in a fresh process: peak RSS during one call minus the RSS before it, in MB."""
    model, image, target = load(spec["model"], spec["size"])
    call = memory_call(spec, model, image, target)
    with torch.inference_mode():
        model(image)  # one-time set-up of the kernels is not the method's memory
    before = _reset_peak_rss()
    call()
    # the kernel's RSS counters are per-CPU approximations (off by up to a few hundred kB), so
    # a call that allocates nothing can read slightly below its baseline: that is zero growth
    return {"peak_growth_mb": max(0.0, (_peak_rss_kb() - before) / 1024)}


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS counter to the current RSS; returns the reset peak in kB.

    The baseline is read from the same counter (VmHWM) as the later peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _status_kb("VmHWM")
    except OSError:  # not Linux, or not allowed: growth of the lifetime peak instead
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    try:
        return _status_kb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_call(spec: dict, model: torch.nn.Module, image: torch.Tensor, target: int) -> Callable[[], object]:
    scale = Scale(**{**asdict(QUICK if spec["quick"] else FULL), **spec.get("override", {})})
    case = next(c for c in build_cases(model, image, target, scale) if c.name.startswith(spec["method"]))
    if spec["impl"] == "ours":
        return case.ours
    if spec["impl"] == "bare":
        return case.bare
    return case.captum[spec["setting"]]


def measure_memory(spec: dict) -> float:
    output = run_child(["--child-memory", json.dumps(spec)])
    return output["peak_growth_mb"]


def run_child(arguments: list[str], extra_env: dict | None = None) -> dict:
    env = {**os.environ, **(extra_env or {})}
    if extra_env is None:
        env.pop("GLIBC_TUNABLES", None)
    threads = ["--threads", str(torch.get_num_threads())]  # children run like their parent
    completed = subprocess.run(
        [sys.executable, __file__, *threads, *arguments],
        capture_output=True, text=True, env=env, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_memory(timings: list[Timing], scale: Scale, quick: bool) -> list[dict]:
    """Peak memory of ours / Captum (its fastest setting) / bare on Lite0, then the scaling pairs."""
    rows = []
    print(f"\n{'method':24} {'ours MB':>8} {'Captum MB':>10} {'bare MB':>8}   (peak RSS growth of one call, Lite0)")
    lite0_rows = [t for t in timings if t.model == "lite0"]
    for timing in [t for t in lite0_rows if t.method.startswith("occlusion")] if quick else lite0_rows:
        method = timing.method.split()[0]
        base = {"model": "lite0", "size": scale.size, "quick": quick, "method": method}
        row = {
            "method": timing.method,
            "ours": measure_memory({**base, "impl": "ours"}),
            "captum": measure_memory({**base, "impl": "captum", "setting": timing.captum_setting}),
            "bare": measure_memory({**base, "impl": "bare"}),
        }
        rows.append(row)
        print(f"{timing.method:24} {row['ours']:8.0f} {row['captum']:10.0f} {row['bare']:8.0f}", flush=True)
    print("\nPeak RSS growth with the same batch size and more work (should stay flat):")
    for label, (small, large) in scale.memory_pairs.items():
        option, method = {"occlusion stride": ("stride", "occlusion"),
                          "smoothgrad samples": ("samples", "smoothgrad"),
                          "ig steps": ("steps", "integrated_gradients")}[label]
        peaks = [
            measure_memory({"model": "lite0", "size": scale.size, "quick": quick, "method": method,
                            "impl": "ours", "override": {option: value}})
            for value in (small, large)
        ]
        rows.append({"pair": label, "values": [small, large], "peaks_mb": peaks})
        print(f"  {label:20} {small:>4} -> {peaks[0]:6.0f} MB   {large:>4} -> {peaks[1]:6.0f} MB", flush=True)
    return rows


# ---------------------------------------------------------------------------------- glibc sweep
def sweep_child(spec: dict) -> dict:
    """Runs in a fresh process: ms per image of bare forwards and of our methods by batch size."""
    from saliencylab import attribution as sl

    scale = QUICK if spec["quick"] else FULL
    model, image, target = load("lite0", scale.size)
    positions = _positions(scale.size, scale.window, 2 * scale.stride)  # a quarter of the positions
    results: dict[str, float] = {}

    def record(name: str, call: Callable[[], object], images: int) -> None:
        # min of two rounds: the first one doubles as the warm-up
        results[name] = min(seconds(call) for _ in range(2)) / images * 1000

    for batch in scale.sweep_batches:
        batch_images = max(batch, 16)
        with torch.inference_mode():
            for layout in ("contiguous", "channels_last"):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                inputs = image.expand(batch, -1, -1, -1).contiguous(memory_format=fmt)
                record(f"forward {layout} @{batch}",
                       lambda: [model(inputs) for _ in range(batch_images // batch)], batch_images // batch * batch)
        record(f"occlusion @{batch}",
               lambda: sl.occlusion(model, image, target, window=scale.window, stride=2 * scale.stride,
                                    batch_size=batch), positions + 1)
        record(f"smoothgrad {scale.samples} @{batch}",
               lambda: sl.smoothgrad(model, image, target, samples=scale.samples, batch_size=batch, seed=0),
               scale.samples)
    return results


def run_glibc_sweep(quick: bool) -> dict:
    spec = json.dumps({"quick": quick})
    without = run_child(["--child-sweep", spec])
    with_tunable = run_child(["--child-sweep", spec], extra_env={"GLIBC_TUNABLES": GLIBC_TUNABLES})
    print(f"\n{'Lite0, ms per image':34} {'default malloc':>14} {'GLIBC_TUNABLES':>15} {'speed-up':>9}")
    for name in without:
        print(f"  {name:32} {without[name]:14.1f} {with_tunable[name]:15.1f} {without[name] / with_tunable[name]:8.2f}x")
    occlusion = {int(k.split("@")[1]): v for k, v in without.items() if k.startswith("occlusion")}
    best = min(occlusion, key=occlusion.get)
    print(f"  fastest occlusion batch without the tunable: {best} "
          f"({occlusion[best]:.1f} ms/image; library default at this size: "
          f"{_default_batch(QUICK.size if quick else FULL.size)})")
    return {"default": without, "tunable": with_tunable, "fastest_occlusion_batch": best}


def _default_batch(size: int) -> int:
    from saliencylab.attribution._base import auto_batch_size

    model, image, _ = load("lite0", size)
    return auto_batch_size(model, image)


# ---------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="64x64 images, tiny sample counts, time table only: seconds")
    parser.add_argument("--models", default="lite0,alexnet", help="comma-separated: lite0, alexnet")
    parser.add_argument("--repeats", type=int, help="timing rounds (min is kept)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction,
                        help="peak-memory subprocesses (default: on, off with --quick)")
    parser.add_argument("--glibc", action=argparse.BooleanOptionalAction,
                        help="GLIBC_TUNABLES / batch-size sweep (default: on, off with --quick)")
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    parser.add_argument("--child-sweep", help=argparse.SUPPRESS)
    return parser.parse_args()


def _wanted(flag: bool | None, quick: bool) -> bool:
    return (not quick) if flag is None else flag


def main() -> None:
    args = parse_args()
    # Captum warns that it set requires_grad on the input and hooked ReLUs: expected here
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        print(json.dumps(memory_child(json.loads(args.child_memory))))
        return
    if args.child_sweep:
        print(json.dumps(sweep_child(json.loads(args.child_sweep))))
        return
    scale = QUICK if args.quick else FULL
    if args.repeats:
        scale = Scale(**{**asdict(scale), "repeats": args.repeats})
    model_keys = [key.strip() for key in args.models.split(",") if key.strip()]
    unknown = set(model_keys) - set(MODELS)
    if unknown:
        sys.exit(f"unknown model(s) {sorted(unknown)}: choose from {sorted(MODELS)}")
    threads = torch.get_num_threads()
    print(f"saliencylab attribution benchmark: CPU ({platform.processor() or platform.machine()}), "
          f"{threads} torch threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"GLIBC_TUNABLES={'set' if os.environ.get('GLIBC_TUNABLES') else 'unset'}")
    print(f"{scale.size}x{scale.size} images, min of {scale.repeats} run(s); "
          f"seconds per call on one image\n")
    print(TIMING_HEADER, flush=True)
    timings = run_timings(model_keys, scale)
    print("\nTargets:")
    for line in check_targets(timings):
        print(line)
    results: dict = {"timings": [asdict(t) for t in timings], "threads": threads, "quick": args.quick}
    if _wanted(args.memory, args.quick) and "lite0" in model_keys:
        results["memory"] = run_memory(timings, scale, args.quick)
    if _wanted(args.glibc, args.quick):
        results["glibc"] = run_glibc_sweep(args.quick)
    if args.quick and not (args.memory or args.glibc):
        print("\n(--quick: memory and GLIBC_TUNABLES parts skipped; add --memory / --glibc for them)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}; results in {RESULTS}")


if __name__ == "__main__":
    main()
