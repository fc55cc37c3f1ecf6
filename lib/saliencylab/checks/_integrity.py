"""Tamper evidence at run time: the checks verify what they rely on, and watch the student's code.

Two layers (the grader adds a static audit of the submission and a sandbox around it):

- **What the checks rely on is verified.** When ``saliencylab.checks`` is imported,
  :func:`capture` records the comparison functions of torch, numpy and math, the builtins,
  every global of the checks' modules (functions with their code, the modules and constants
  they use) and every function, class and module the rest of saliencylab defines or imports. Before and after each check,
  :func:`verify_untouched` compares them with what is there now; a replaced ``torch.allclose``,
  a patched ``check_*`` helper or a function given another ``__code__`` raises
  :class:`TamperingError` naming it.
- **Tripwires on the reference implementations.** While the student's function runs inside a
  check, a profile hook watches for calls of the library functions that implement the very
  method the exercise asks for (``reference_implementations.json``: ``saliency`` inside
  ``saliency_map``). A call raises :class:`ReferenceImplementationCalled` when the check ends,
  even if the student's code caught an error or the check failed for another reason.

Every public ``check_<exercise>`` is decorated with :func:`exercise_check`; honest code never
triggers either layer (the course's tests run every solution and wrong answer through them).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import importlib
import inspect
import io
import json
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from saliencylab.checks._common import CheckFailed, running_check

REFERENCES_FILE = Path(__file__).with_name("reference_implementations.json")

# What the checks compare with, beyond saliencylab's own functions: (owner, its name, attributes).
_LIBRARY_ATTRIBUTES: tuple[tuple[Any, str, tuple[str, ...]], ...] = (
    (torch, "torch", ("allclose", "isclose", "equal", "eq", "abs", "all", "any", "isfinite", "where",
                      "as_tensor", "tensor", "zeros_like", "stack", "cat")),
    (torch.testing, "torch.testing", ("assert_close",)),
    (torch.Tensor, "torch.Tensor", ("allclose", "isclose", "equal", "__eq__", "abs", "sum", "mean",
                                    "norm", "item", "tolist", "all", "any", "detach", "clone",
                                    "double", "cpu", "max", "amax", "flatten")),
    (torch.autograd, "torch.autograd", ("grad",)),
    (torch.nn.Module, "torch.nn.Module", ("__call__", "_call_impl", "eval", "train")),
    (np, "numpy", ("allclose", "isclose", "array_equal", "asarray")),
    (np.testing, "numpy.testing", ("assert_allclose", "assert_array_equal")),
    (math, "math", ("isclose", "isfinite", "isnan")),
    (builtins, "builtins", ("abs", "all", "any", "bool", "callable", "float", "getattr", "hasattr",
                            "int", "isinstance", "len", "max", "min", "print", "range", "repr",
                            "round", "sorted", "str", "sum", "tuple", "type", "zip", "list", "dict",
                            "set")),
)


class TamperingError(CheckFailed):
    """Something the checks rely on was replaced or patched: the result cannot be trusted."""


class ReferenceImplementationCalled(TamperingError):
    """The student's function called the library's implementation of the method it should write."""


_captured: dict[tuple[str, str], tuple[Any, Any, types.CodeType | None]] = {}
_reference_codes: dict[str, dict[types.CodeType, str]] = {}


def capture() -> None:
    """Record what the checks rely on (called once ``saliencylab.checks`` is fully imported,
    before any student code can run in the same kernel)."""
    if _captured:
        return
    for owner, label, names in _LIBRARY_ATTRIBUTES:
        for name in names:
            _record(owner, label, name)
    for module_name, module in sorted(sys.modules.items()):
        if module_name == "saliencylab" or module_name.startswith("saliencylab."):
            in_checks = module_name.startswith("saliencylab.checks")
            for name, value in list(vars(module).items()):
                if name.startswith("__") and name.endswith("__"):
                    continue
                # the checks' every global (their tolerances too); elsewhere the code only:
                # settings such as _core.MAX_AUTO_BATCH_SIZE are a user's to change
                if in_checks or callable(value) or inspect.ismodule(value):
                    _record(module, module_name, name)
    for exercise, dotted in load_reference_table().items():
        _reference_codes[exercise] = {_code_of(resolve(path)): path.split(":")[1] for path in dotted}


def load_reference_table() -> dict[str, list[str]]:
    """Exercise -> ``"module:function"`` (or ``"module:Class.method"``) of each library function
    that implements it."""
    table = json.loads(REFERENCES_FILE.read_text())
    return {exercise: paths for exercise, paths in table.items() if not exercise.startswith("_")}


def resolve(path: str) -> Callable:
    """The function named by ``"module:function"`` or ``"module:Class.method"``."""
    module_name, name = path.split(":")
    found: Any = importlib.import_module(module_name)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def _code_of(function: Callable) -> types.CodeType:
    return inspect.unwrap(function).__code__


def _record(owner: Any, label: str, name: str) -> None:
    value = inspect.getattr_static(owner, name)
    code = value.__code__ if inspect.isfunction(value) else None
    _captured[(label, name)] = (owner, value, code)


def tampered() -> list[str]:
    """What was changed since :func:`capture` (empty when nothing was)."""
    changes = []
    for (label, name), (owner, value, code) in _captured.items():
        try:
            now = inspect.getattr_static(owner, name)
        except AttributeError:
            changes.append(f"{label}.{name} was deleted")
            continue
        if now is not value:
            changes.append(f"{label}.{name} was replaced")
        elif code is not None and value.__code__ is not code:
            changes.append(f"{label}.{name} was given other code (__code__)")
    return changes


def verify_untouched(when: str) -> None:
    """Raise :class:`TamperingError` when anything captured was changed."""
    changes = tampered()
    if changes:
        shown = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise TamperingError(
            f"{when}: {shown}. The checks rely on these; code that changes them is flagged for the "
            "instructor. Remove it, restart the kernel and run the notebook again."
        )


class ReferenceWatch:
    """Records calls of an exercise's reference implementations while the student's code runs."""

    def __init__(self, exercise: str) -> None:
        self.exercise = exercise
        self.codes = _reference_codes.get(exercise, {})
        self.called: list[str] = []
        self.profiler_removed = False

    def guard(self, student_fn: Any) -> Any:
        """``student_fn``, watched whenever the check calls it."""
        if not callable(student_fn) or not self.codes:
            return student_fn

        @functools.wraps(student_fn)
        def watched(*args: Any, **kwargs: Any) -> Any:
            return self.run(student_fn, *args, **kwargs)

        return watched

    def run(self, student_fn: Callable, *args: Any, **kwargs: Any) -> Any:
        codes, called = self.codes, self.called

        def profile(frame: types.FrameType, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code in codes:
                called.append(codes[frame.f_code])

        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            return student_fn(*args, **kwargs)
        finally:
            if sys.getprofile() is not profile:
                self.profiler_removed = True
            sys.setprofile(previous)

    def raise_if_called(self) -> None:
        if self.called:
            names = ", ".join(f"{name}()" for name in dict.fromkeys(self.called))
            raise ReferenceImplementationCalled(
                f"{self.exercise} called saliencylab's reference implementation {names}: this "
                "exercise asks you to write the method yourself (the check compares your function "
                "with that reference). Use the building blocks of the lesson instead."
            )
        if self.profiler_removed:
            raise TamperingError(
                f"{self.exercise} replaced the profiler (sys.setprofile) the check watches it "
                "with: that is flagged for the instructor. Remove that code."
            )


CheckFn = TypeVar("CheckFn", bound=Callable[..., Any])


def exercise_check(check: CheckFn) -> CheckFn:
    """Decorate ``check_<exercise>(student_fn, ...)``: verify what the check relies on before and
    after it, and run the student's function under the exercise's tripwires. A tampering error
    takes precedence over the check's own verdict (the student cannot hide one by failing)."""
    exercise = check.__name__.removeprefix("check_")
    verify = verify_untouched  # bound now: patching the module's name later changes nothing here

    @functools.wraps(check)
    def checked(student_fn: Any, *args: Any, **kwargs: Any) -> Any:
        verify(f"before {check.__name__} ran")
        watch = ReferenceWatch(exercise)
        report = io.StringIO()  # the check's verdict is shown only once it is known to be honest
        try:
            with contextlib.redirect_stdout(report), running_check(check.__name__):
                return check(watch.guard(student_fn), *args, **kwargs)
        finally:  # on success and on failure alike; tampering found here replaces the verdict
            watch.raise_if_called()
            verify(f"while {check.__name__} ran")
            print(report.getvalue(), end="")

    return checked  # type: ignore[return-value]
