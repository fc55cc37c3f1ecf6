"""Shared machinery of the exercise checks: comparisons that explain themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn


class CheckFailed(AssertionError):
    """An exercise's result is wrong; the message names the likely mistake and what to do."""


def fail(message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` (shown to the student)."""
    raise CheckFailed(message)


_RUNNING_CHECK: ContextVar[str] = ContextVar("running_check", default="check")


@contextmanager
def running_check(name: str) -> Iterator[None]:
    """While active, :func:`passed` reports as check ``name`` (set by ``@exercise_check``)."""
    token = _RUNNING_CHECK.set(name)
    try:
        yield
    finally:
        _RUNNING_CHECK.reset(token)


def passed(detail: str) -> None:
    """Print the success line, the same for every check: ``✓ check_<exercise> passed: <detail>``,
    where ``detail`` says what was compared (cases, shapes, expected and got)."""
    print(f"\u2713 {_RUNNING_CHECK.get()} passed: {detail}")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """||got - expected|| / ||expected|| (absolute error when ``expected`` is all zeros)."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    scale = expected.norm().item()
    diff = (got - expected).norm().item()
    return diff / scale if scale > 0 else diff


def close(got: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> bool:
    """Same shape and relative error within ``tol``."""
    return tuple(got.shape) == tuple(expected.shape) and relative_error(got, expected) <= tol


def require_tensor(result: Any, what: str) -> torch.Tensor:
    """Fail unless ``result`` is a tensor (a common slip: returning None or a numpy array)."""
    if result is None:
        fail(f"{what} returned None: did you forget the `return` statement?")
    if not isinstance(result, torch.Tensor):
        fail(f"{what} must return a torch.Tensor, got {type(result).__name__}.")
    return result


def require_shape(
    result: torch.Tensor,
    expected_shape: Iterable[int],
    what: str,
    hint: str | Mapping[tuple[int, ...], str] = "",
    otherwise: str = "",
) -> None:
    """Fail with both shapes when they differ, and a hint: ``hint`` itself, or looked up in a
    table ``{usual wrong shape: what it means}`` (``otherwise`` for any other shape)."""
    expected_shape = tuple(expected_shape)
    shape = tuple(result.shape)
    if shape == expected_shape:
        return
    text = hint.get(shape, otherwise) if isinstance(hint, Mapping) else hint
    fail(f"{what} has shape {shape}, expected {expected_shape}." + (f" {text}" if text else ""))


def diagnose(
    got: torch.Tensor,
    expected: torch.Tensor,
    mistakes: dict[str, torch.Tensor],
    what: str,
    tol: float = 1e-4,
) -> None:
    """Compare ``got`` with ``expected``; when it is wrong, name the mistake whose result it matches.

    ``mistakes`` maps an explanation ("you took softmax probabilities...") to the result that
    mistake would give on the same inputs.
    """
    if close(got, expected, tol):
        return
    for explanation, wrong in mistakes.items():
        if close(got, wrong, tol):
            fail(f"{what} is not right: {explanation}")
    fail(
        f"{what} differs from the reference (relative error {relative_error(got, expected):.3g}, "
        f"allowed {tol:g}). Expected values like {_preview(expected)}, got {_preview(got)}."
    )


def _preview(tensor: torch.Tensor) -> str:
    flat = tensor.detach().flatten()[:4].double().cpu().tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + ", ...]"


def snapshot_side_effects(model: nn.Module) -> Callable[[str], None]:
    """Record hooks and parameter gradients of ``model``; the returned function fails if a
    call in between left hooks behind or touched ``.grad`` (``what`` names the function)."""
    grads = {name: (None if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()}
    hook_counts = _hook_counts(model)

    def verify(what: str) -> None:
        if _hook_counts(model) != hook_counts:
            fail(
                f"{what} left hooks registered on the model. Keep the handles returned by "
                "register_*_hook and call handle.remove() in a `finally:` block (or use a "
                "`with` context manager) so they are removed even when an error happens."
            )
        for name, param in model.named_parameters():
            before = grads[name]
            if (before is None) != (param.grad is None) or (
                before is not None and not torch.equal(before, param.grad)
            ):
                fail(
                    f"{what} changed the parameters' .grad (e.g. {name}). Use "
                    "torch.autograd.grad(score, image) instead of score.backward(): it returns the "
                    "gradient w.r.t. the image only and leaves the model's gradients untouched."
                )

    return verify


def _hook_counts(model: nn.Module) -> list[int]:
    return [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    ]


def non_predicted_targets(model: nn.Module, images: torch.Tensor) -> list[int]:
    """One class per image that is not its predicted class, different between images where
    the number of classes allows."""
    with torch.no_grad():
        logits = model(images)
    chosen: list[int] = []
    for top in logits.argmax(dim=1).tolist():
        others = [c for c in range(logits.shape[1]) if c != top]
        unused = [c for c in others if c not in chosen]
        chosen.append((unused or others or [top])[0])
    return chosen


def as_target_list(target: int | Sequence[int] | torch.Tensor, batch_size: int) -> list[int]:
    """``target`` (an int, a list or a tensor of classes) as one class per image."""
    values = torch.as_tensor(target).reshape(-1).tolist()
    return values * batch_size if len(values) == 1 else values
