"""Checks for notebook 10 (sanity checks for saliency maps).

``check_cascading_randomization`` checks
``cascading_randomization(model, image, method, target, layer_groups, seed) -> [L + 1, H, W]``
(Adebayo et al. 2018): it hands the student's function an attribution method wrapped in a
recorder that notes, at every call, which model it was given, which of its layer groups had
been re-initialised, which class it was asked to explain and which map it returned. From that
record it can tell, exactly, whether the user's model was left alone, whether the target stayed
fixed, and whether the randomisation was cascading, top first.

``check_deletion_scores`` checks
``deletion_scores(model, image, saliency_map, target, steps, baseline, batch_size) -> [steps + 1]``
against ``saliencylab.metrics.deletion_curve`` (Petsiuk et al. 2018; softmax probability of the
target, most salient pixels first) and names the usual slips (increasing order, logits, a
missing 0 % or 100 % point, |map|, rounding, not cumulative, not batched, autograd on).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from saliencylab.attribution import saliency
from saliencylab.checks._common import close, diagnose, fail, passed, require_shape, require_tensor
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._running import Batching, require_batched
from saliencylab.checks._promises import InjectedError, Promises, batch_sizes_to_try, call_expecting_failure
from saliencylab.checks._fixtures import (
    ForwardCall,
    ForwardRecorder,
    fixed_occlusion_model,
    kaiming_init_,
    smooth_random_images,
)
from saliencylab.metrics import auc, deletion_curve

__all__ = [
    "CASCADE_GROUPS",
    "MethodRecorder",
    "cascade_test_model",
    "check_cascading_randomization",
    "check_deletion_scores",
]

CascadeFn = Callable[..., torch.Tensor]
DeletionFn = Callable[..., torch.Tensor]

#: The layer groups of :func:`cascade_test_model`, top (logits) first.
# read from the exercises' docstrings (tests/test_promises.py): cascading_randomization leaves
# the model "exactly as it was"; deletion_scores' batch_size = at most this many images
PROMISES = {
    "cascading_randomization": Promises(cleans_up_on_error=True),
    "deletion_scores": Promises(chunked_by_batch_size=True),
}

# one pass more than the curve needs: e.g. on the untouched image
PERTURBED_IMAGES = Batching(item="perturbed image", items="perturbed images", count="len(perturbed)",
                            extra_passes=1, exact_total=False, gradients=False)

CASCADE_GROUPS = (("fc",), ("conv2", "bn2"), ("conv1",))
CASCADE_IMAGE_SIZE = (12, 16)
DELETION_IMAGE_SIZE = (9, 13)  # 117 pixels: k * 117 / 10 is not a whole number, so floor != round


# ------------------------------------------------------------------ cascading randomisation


def cascade_test_model(seed: int = 0) -> nn.Module:
    """A small CNN ``[N, 3, H, W] -> [N, 5]`` with named layers ``conv1``, ``conv2``, ``bn2``
    and ``fc`` (:data:`CASCADE_GROUPS`), every parameter and BatchNorm statistic drawn at
    random, so re-initialising any group changes it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(6, 8, 3, padding=1),
            bn2=nn.BatchNorm2d(8),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(32, 5),
        ))
        kaiming_init_(model)
        with torch.no_grad():
            model.bn2.weight.uniform_(0.5, 1.5)
            model.bn2.bias.normal_(0.0, 0.2)
            model.bn2.running_mean.normal_(0.0, 0.2)
            model.bn2.running_var.uniform_(0.5, 1.5)
    return model.eval()


@dataclass
class MethodCall:
    """What :class:`MethodRecorder` saw at one call of the method."""

    target: int | None
    prediction: int
    randomized: tuple[int, ...]
    others_changed: bool
    saliency_map: torch.Tensor


class MethodRecorder:
    """An attribution method that records every call.

    For each call: the target (``None`` when none was given), the class the model it was
    given predicts for the image, which of ``groups`` differ from the trained
    ``reference`` state (re-initialised), whether any parameter outside the groups changed, and
    the ``[H, W]`` map returned. Calls ``method(model, images, target=target)``.
    """

    def __init__(
        self,
        method: Callable[..., torch.Tensor],
        reference: nn.Module,
        groups: Sequence[Sequence[str]],
    ) -> None:
        self.method = method
        self.reference = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        self.groups = [tuple(group) for group in groups]
        self.calls: list[MethodCall] = []

    def __call__(self, model: nn.Module, images: torch.Tensor, target: object = None, **options: object) -> torch.Tensor:
        batch = images if images.dim() == 4 else images.unsqueeze(0)
        with torch.no_grad():
            prediction = int(model(batch.detach())[0].argmax())
        state = model.state_dict()
        changed = {key for key, value in state.items() if not torch.equal(value, self.reference[key])}
        randomized = tuple(i for i, group in enumerate(self.groups) if any(_in_group(key, group) for key in changed))
        others = any(not any(_in_group(key, group) for group in self.groups) for key in changed)
        result = self.method(model, images, target=target, **options)
        self.calls.append(MethodCall(
            target=_as_class(target),
            prediction=prediction,
            randomized=randomized,
            others_changed=others,
            saliency_map=result.detach().reshape(batch.shape[-2:]).clone(),
        ))
        return result


def _in_group(state_key: str, group: Sequence[str]) -> bool:
    return any(state_key.startswith(name + ".") for name in group)


def _as_class(target: object) -> int | None:
    if target is None:
        return None
    return int(torch.as_tensor(target).flatten()[0])


def _cascade_image(seed: int) -> torch.Tensor:
    return smooth_random_images(1, CASCADE_IMAGE_SIZE, seed + 3)[0]


def _run_cascade(
    student_fn: CascadeFn,
    model: nn.Module,
    image: torch.Tensor,
    target: int | None,
    groups: Sequence[Sequence[str]],
    seed: int,
    method: Callable[..., torch.Tensor],
) -> tuple[torch.Tensor, MethodRecorder]:
    what = "cascading_randomization"
    trained = copy.deepcopy(model.state_dict())
    recorder = MethodRecorder(method, model, groups)
    result = student_fn(model, image.clone(), recorder, target, [list(g) for g in groups], seed=seed)
    if any(not torch.equal(value, trained[key]) for key, value in model.state_dict().items()):
        fail(
            f"{what} modified the model it was given: its weights are no longer the trained "
            "ones, so every later map of that model would be wrong. Randomise a copy: "
            "randomised = copy.deepcopy(model), then re-initialise and explain `randomised` only."
        )
    if not recorder.calls:
        fail(f"{what} never called `method`: compute each map with method(model_copy, image[None], target=...).")
    result = require_tensor(result, what)
    _require_cascade_shape(result, image, len(groups), what)
    return result.detach(), recorder


def _require_cascade_shape(result: torch.Tensor, image: torch.Tensor, steps: int, what: str) -> None:
    height, width = image.shape[-2:]
    hints = {
        (steps, height, width): "That is one map per randomisation step, but maps[0] must be the map "
        "of the TRAINED model, before any randomisation: the one every other map is compared with.",
        (steps + 1, 1, height, width): "Drop the batch dimension of each map: method(...)[0] is [H, W].",
    }
    require_shape(result, (steps + 1, height, width), what + "'s result", hints,
                  otherwise="Stack the maps: torch.stack([trained_map, map_after_step_1, ...]).")


def _check_targets(calls: list[MethodCall], expected: int, what: str) -> None:
    for step, call in enumerate(calls):
        if call.target is None:
            fail(
                f"{what} called method without a target at step {step}: the method then "
                "explains whatever class the (randomised) model predicts. Resolve the target "
                "ONCE, on the trained model, and pass target=that class at every step."
            )
        if call.target != expected:
            if call.target == call.prediction:
                fail(
                    f"{what} re-predicted the target at step {step} (class {call.target}, the "
                    f"randomised model's top class) instead of keeping class {expected}: the test "
                    "asks whether the map of the SAME class changes as the model is destroyed. "
                    "Decide the target once, on the trained model, before randomising."
                )
            fail(f"{what} explained class {call.target} at step {step}, expected class {expected}.")


def _check_cascade(calls: list[MethodCall], steps: int, what: str) -> None:
    seen = [set(call.randomized) for call in calls]
    expected = [set(range(k)) for k in range(steps + 1)]
    if seen == expected:
        if any(call.others_changed for call in calls):
            fail(
                f"{what} changed parameters outside layer_groups: re-initialise only the "
                "modules named in each group."
            )
        return
    if seen[0]:
        fail(
            f"{what}: maps[0] was computed on a model whose groups {sorted(seen[0])} were "
            "already randomised; maps[0] is the trained model's map, computed before any "
            "randomisation."
        )
    if all(not groups for groups in seen):
        fail(
            f"{what} never passed a randomised model to `method`: the model it explained always "
            "had the trained weights. Re-initialise the copy and explain that same copy."
        )
    if seen == [set()] + [{k} for k in range(steps)]:
        fail(
            f"{what} randomised the groups independently (step k changed group k only, on a "
            "fresh copy): the test is CASCADING, each step randomises one more group on top of "
            "the previous ones, from the logits down, until the whole network is random. Make "
            "one copy before the loop and keep randomising it."
        )
    if seen == [set(range(steps - k, steps)) for k in range(steps + 1)]:
        fail(
            f"{what} randomised from the bottom up: layer_groups are listed top (logits) "
            "first, and the cascade follows that order."
        )
    if all(groups == set(range(steps)) for groups in seen[1:]):
        fail(
            f"{what} randomised every group at the first step: randomise ONE more group per "
            "step, computing a map after each."
        )
    fail(
        f"{what}: after each step the randomised groups should be {[sorted(s) for s in expected]} "
        f"(group 0 = the top), found {[sorted(s) for s in seen]}."
    )


@exercise_check
def check_cascading_randomization(
    student_fn: CascadeFn,
    *,
    seed: int = 0,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    layer_groups: Sequence[Sequence[str]] | None = None,
    method: Callable[..., torch.Tensor] = saliency,
) -> None:
    """Check ``cascading_randomization(model, image, method, target, layer_groups, seed)``.

    Without arguments: :func:`cascade_test_model` (5 classes), a ``[3, 12, 16]`` image, the
    three groups of :data:`CASCADE_GROUPS` and the gradient (``saliency``) as the method; it
    runs with ``target=None`` (the trained model's class) and with a class the model does not
    predict, and twice with the same seed (the maps must be the same). ``model``, ``image``,
    ``layer_groups`` and ``method`` give other inputs.
    """
    model = cascade_test_model(seed) if model is None else model
    image = _cascade_image(seed) if image is None else image
    groups = CASCADE_GROUPS if layer_groups is None else layer_groups
    what = "cascading_randomization"
    with torch.no_grad():
        logits = model(image[None])[0]
    predicted = int(logits.argmax())
    other = int(logits.argsort()[len(logits) // 2])

    for target in (None, other):
        expected_target = predicted if target is None else target
        result, recorder = _run_cascade(student_fn, model, image, target, groups, seed, method)
        calls = recorder.calls
        if len(calls) != len(groups) + 1:
            fail(
                f"{what} called `method` {len(calls)} times with {len(groups)} layer groups; "
                f"expected {len(groups) + 1}: once on the trained model, then once after "
                "randomising each group."
            )
        _check_targets(calls, expected_target, what)
        _check_cascade(calls, len(groups), what)
        recorded = torch.stack([call.saliency_map for call in calls])
        if not torch.allclose(result, recorded.to(result.dtype), atol=1e-6, rtol=1e-5):
            fail(
                f"{what} returned maps that differ from the maps `method` computed: return them "
                "in the order they were computed, torch.stack([trained_map, map_1, ...])."
            )

    again, _ = _run_cascade(student_fn, model, image, other, groups, seed, method)
    if not torch.allclose(again, result, atol=1e-6, rtol=1e-5):
        fail(
            f"{what}: two calls with the same seed gave different maps. Re-initialise with the "
            "seeded helper, reinitialise(randomised, group, seed + step), so the test can be "
            "repeated."
        )
    _require_model_intact_after_error(student_fn, model, image, groups, seed, method)
    passed(
        f"{len(groups) + 1} maps {tuple(result.shape[1:])}, target kept at class {expected_target} at "
        f"every step, groups randomised {[list(call.randomized) for call in recorder.calls]}, "
        "the model you passed left unchanged, also when `method` raised an error halfway",
    )


def _require_model_intact_after_error(
    student_fn: CascadeFn, model: nn.Module, image: torch.Tensor, groups: Sequence[Sequence[str]],
    seed: int, method: Callable[..., torch.Tensor],
) -> None:
    """The docstring's promise, on the error path: when `method` raises at step 1 (after the
    trained model's map), the model given is still exactly as it was."""
    trained = copy.deepcopy(model.state_dict())
    calls = 0

    def method_failing_at_step_1(randomized: nn.Module, images: torch.Tensor, **options: object) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise InjectedError("an error raised by `method` at step 1 (injected by the check)")
        return method(randomized, images, **options)

    call_expecting_failure(
        lambda: student_fn(model, image.clone(), method_failing_at_step_1, None, [list(g) for g in groups], seed=seed)
    )
    if any(not torch.equal(value, trained[key]) for key, value in model.state_dict().items()):
        fail(
            "cascading_randomization left the model it was given randomised when `method` raised "
            "an error halfway: an in-place randomisation restored only at the end is lost on any "
            "error. Randomise a copy, randomised = copy.deepcopy(model), and never touch `model`."
        )


# ------------------------------------------------------------------------ deletion curve


def _deletion_image(seed: int) -> torch.Tensor:
    return smooth_random_images(1, DELETION_IMAGE_SIZE, seed + 5)[0]


def _signed_map(seed: int, size: Sequence[int]) -> torch.Tensor:
    """A signed ``[H, W]`` map without ties: ranking by |map| differs from ranking by map."""
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed + 7))


def _probabilities(model: nn.Module, images: torch.Tensor, target: int, score: str = "prob") -> torch.Tensor:
    with torch.no_grad():
        logits = model(images)
    if score == "logit":
        return logits[:, target]
    probabilities = logits.softmax(dim=1)
    return probabilities.amax(dim=1) if score == "top" else probabilities[:, target]


def _ranks(saliency_map: torch.Tensor) -> torch.Tensor:
    """``[H*W]``: position of each pixel in decreasing-saliency order (0 = most salient)."""
    order = torch.argsort(saliency_map.flatten(), descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def _curve_from_masks(
    model: nn.Module, image: torch.Tensor, masks: torch.Tensor, baseline: float, target: int, score: str = "prob"
) -> torch.Tensor:
    """Scores of ``image`` with ``masks [K, H*W]`` (True = deleted) set to ``baseline``, ``[K]``."""
    deleted = masks.view(-1, 1, *image.shape[-2:])
    return _probabilities(model, torch.where(deleted, torch.tensor(baseline, dtype=image.dtype), image), target, score)


def _deletion_scores_mistakes(
    model: nn.Module, image: torch.Tensor, saliency_map: torch.Tensor, target: int, steps: int, baseline: float
) -> dict[str, torch.Tensor]:
    ranks = _ranks(saliency_map)
    pixels = ranks.numel()
    floor_counts = torch.arange(steps + 1) * pixels // steps
    cumulative = ranks[None] < floor_counts[:, None]  # [steps + 1, H*W]
    round_counts = torch.round(torch.arange(steps + 1) * pixels / steps).long()
    chunk = (ranks[None] >= torch.cat([floor_counts[:1], floor_counts[:-1]])[:, None]) & cumulative

    def curve(**options: object) -> torch.Tensor:
        return deletion_curve(model, image, saliency_map, target, steps=steps, baseline=baseline, **options)

    mistakes = {
        "you deleted the LEAST salient pixels first (increasing order). Deletion removes the "
        "pixels the map ranks highest first: sort with descending=True.": deletion_curve(
            model, image, -saliency_map, target, steps=steps, baseline=baseline),
        "you tracked the target LOGIT. The deletion curve (Petsiuk et al., and "
        "saliencylab.metrics.deletion_curve) tracks the softmax PROBABILITY of the target, "
        "which lies in [0, 1], so that areas under the curve compare across images.": curve(score="logit"),
        "you ranked the pixels by |map|. The map says how important each pixel is, larger = "
        "more important, and it may be signed: rank by the values as given (take abs() only if "
        "the method itself does, before calling).": deletion_curve(
            model, image, saliency_map.abs(), target, steps=steps, baseline=baseline),
        "the number of deleted pixels is rounded: at step k delete the first "
        "k * H * W // steps pixels (floor), as saliencylab does.": _curve_from_masks(
            model, image, ranks[None] < round_counts[:, None], baseline, target),
        "the deletion is not cumulative: at step k ALL of the first floor(k * H * W / steps) "
        "pixels must be deleted, not only the ones added at step k.": _curve_from_masks(
            model, image, chunk, baseline, target),
        "you tracked the probability of each perturbed image's TOP class. The curve follows "
        "one class, `target`, all the way down.": _curve_from_masks(
            model, image, cumulative, baseline, target, score="top"),
    }
    if baseline != 0:
        mistakes[
            f"deleted pixels were set to 0 instead of `baseline` ({baseline})."
        ] = deletion_curve(model, image, saliency_map, target, steps=steps, baseline=0.0)
    with torch.no_grad():
        predicted = int(model(image[None])[0].argmax())
    if predicted != target:
        mistakes[
            f"you tracked the predicted class {predicted} instead of the requested target {target}."
        ] = deletion_curve(model, image, saliency_map, predicted, steps=steps, baseline=baseline)
    return mistakes


def _require_curve_shape(got: torch.Tensor, expected: torch.Tensor, steps: int, what: str) -> None:
    shape = tuple(got.shape)
    if shape == (steps,):
        if close(got, expected[1:]):
            hint = "The 0 % point is missing: the curve starts with the untouched image (k = 0)."
        elif close(got, expected[:-1]):
            hint = "The 100 % point is missing: the curve ends with every pixel deleted (k = steps)."
        else:
            hint = "Include both ends: k = 0 (untouched image) to k = steps (all pixels deleted)."
    elif shape == (1, steps + 1):
        hint = "Return the curve of the one image, [steps + 1] (drop the batch dimension)."
    elif shape == (steps + 2,):
        hint = "One point too many: k runs from 0 to steps, both included, range(steps + 1)."
    else:
        hint = "One score per step k = 0, 1, ..., steps."
    require_shape(got, (steps + 1,), what, hint)


@exercise_check
def check_deletion_scores(
    student_fn: DeletionFn,
    *,
    seed: int = 0,
    steps: int = 10,
    baseline: float = 0.3,
    batch_size: int = 4,
    target: int | None = None,
    model: nn.Module | None = None,
    image: torch.Tensor | None = None,
    saliency_map: torch.Tensor | None = None,
    tol: float = 1e-4,
) -> None:
    """Check ``deletion_scores(model, image, saliency_map, target, steps, baseline, batch_size)``.

    Without arguments: a small CNN (5 classes, parameters that require grad), a ``[3, 9, 13]``
    image, a signed ``[9, 13]`` map without ties, a target the model does not predict, 10 steps
    (117 pixels, so rounding shows), grey-ish baseline 0.3, batches of at most 4. ``model``,
    ``image`` ``[3, H, W]``, ``saliency_map`` ``[H, W]``, ``target``, ``steps``, ``baseline``
    and ``batch_size`` give other inputs.
    """
    model = fixed_occlusion_model(seed + 7) if model is None else model
    image = _deletion_image(seed) if image is None else image
    saliency_map = _signed_map(seed, image.shape[-2:]) if saliency_map is None else saliency_map
    if target is None:
        with torch.no_grad():
            logits = model(image[None])[0]
        target = int(logits.argsort()[len(logits) // 2])
    expected = deletion_curve(model, image, saliency_map, target, steps=steps, baseline=baseline)
    calls, got = _run_deletion(student_fn, model, image, saliency_map, target, steps, baseline, batch_size, expected, tol)
    other_sizes = batch_sizes_to_try(steps + 1, batch_size)[1:]
    for size in other_sizes:
        _run_deletion(student_fn, model, image, saliency_map, target, steps, baseline, size, expected, tol)
    passed(
        f"{steps + 1} scores in {len(calls)} forward passes of at most {batch_size} images (batch_size "
        f"{' and '.join(map(str, other_sizes))} give the same scores); expected {_ends(expected)}, "
        f"got {_ends(got)}",
    )


def _run_deletion(
    student_fn: DeletionFn, model: nn.Module, image: torch.Tensor, saliency_map: torch.Tensor,
    target: int, steps: int, baseline: float, batch_size: int, expected: torch.Tensor, tol: float,
) -> tuple[list[ForwardCall], torch.Tensor]:
    """The forward passes the student's function made and its scores ``[steps + 1]``, after
    failing with the likely mistake if they differ from ``expected``."""
    what = "deletion_scores(model, image, saliency_map, target, steps, baseline, batch_size)"
    recorder = ForwardRecorder(model).train(model.training)  # the wrapper mirrors the model's mode
    image_given, map_given = image.clone(), saliency_map.clone()
    got = student_fn(recorder, image_given, map_given, target, steps=steps, baseline=baseline, batch_size=batch_size)
    if not torch.equal(image_given, image):
        fail(
            f"{what} changed the image it was given (pixels set to the baseline in place): make "
            "new perturbed images (torch.where, or image.clone()) and leave the caller's image alone."
        )
    if not torch.equal(map_given, saliency_map):
        fail(f"{what} changed the saliency map it was given: sort a copy, never the caller's map.")
    got = require_tensor(got, "deletion_scores").detach()
    _require_curve_shape(got, expected, steps, what)
    got = got.to(expected.dtype)
    if not close(got, expected, tol):
        diagnose(got, expected, _deletion_scores_mistakes(model, image, saliency_map, target, steps, baseline),
                 f"{what} with batch_size={batch_size}", tol)
    require_batched([c.batch_size for c in recorder.calls], steps + 1, batch_size, "deletion_scores", PERTURBED_IMAGES,
                    autograd_on=any(c.grad_enabled or c.output_requires_grad for c in recorder.calls))
    return recorder.calls, got


def _ends(curve: torch.Tensor) -> str:
    return f"{curve[0].item():.4f} -> {curve[-1].item():.4f} (area {auc(curve):.4f})"
