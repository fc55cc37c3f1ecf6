"""Checks for notebook 10 (sanity checks for saliency maps: the randomisation test).

``check_cascading_randomization`` checks
``cascading_randomization(model, image, method, target, layer_groups, seed) -> [L + 1, H, W]``
(Adebayo et al. 2018): it hands the student's function an attribution method wrapped in a
recorder that notes, at every call, which model it was given, which of its layer groups had
been re-initialised, which class it was asked to explain and which map it returned. From that
record it can tell, exactly, whether the user's model was left alone, whether the target stayed
fixed, and whether the randomisation was cascading, top first.

The deletion-curve exercise moved to notebook 11, with its check
(:mod:`saliencylab.checks.nb11_faithfulness`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from saliencylab.attribution import saliency
from saliencylab.checks._common import fail, passed, require_shape, require_tensor
from saliencylab.checks._integrity import exercise_check
from saliencylab.checks._promises import InjectedError, Promises, call_expecting_failure
from saliencylab.checks._fixtures import kaiming_init_, smooth_random_images

__all__ = [
    "CASCADE_GROUPS",
    "MethodRecorder",
    "cascade_test_model",
    "check_cascading_randomization",
]

CascadeFn = Callable[..., torch.Tensor]

#: The layer groups of :func:`cascade_test_model`, top (logits) first.
# read from the exercise's docstring (tests/test_promises.py): cascading_randomization leaves
# the model "exactly as it was"
PROMISES = {
    "cascading_randomization": Promises(cleans_up_on_error=True),
}

CASCADE_GROUPS = (("fc",), ("conv2", "bn2"), ("conv1",))
CASCADE_IMAGE_SIZE = (12, 16)


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
