"""What an exercise's docstring promises, and the cases a check runs to hold the student to it.

The common path (the check's default inputs) shows that a method computes the right thing.
The docstring also promises where it keeps working, and that is where students' code usually
breaks: a batch of one image (a stray ``.squeeze()``), batch sizes that do not divide the work
(a last, smaller chunk dropped or padded), and an error inside the computation (hooks left on
the model, a model left half randomised). :func:`read_promises` reads those promises from the
exercise's docstring with one set of rules; every check declares the result as its
``PROMISES`` (tests/test_promises.py parses each solution's docstring and compares), and runs
the cases below for each promise it declares.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Promises:
    """The cases an exercise's docstring commits it to, beyond the common path.

    Attributes:
        image_batches: ``images`` is ``[B, 3, H, W]``: a batch of one works as well as several.
        chunked_by_batch_size: ``batch_size`` bounds how many inputs go through the model at
            once: any batch size works, including ones that do not divide the work.
        cleans_up_on_error: the function removes its hooks / leaves the model as it was even
            when an error is raised inside it.
    """

    image_batches: bool = False
    chunked_by_batch_size: bool = False
    cleans_up_on_error: bool = False


_ARGS_ENTRY = re.compile(r"^\s{4,}(\w+):\s*(.*)$")


def argument_descriptions(docstring: str) -> dict[str, str]:
    """``{argument name: its description}`` from a Google-style ``Args:`` section."""
    described: dict[str, str] = {}
    section = docstring.split("Args:", 1)[1] if "Args:" in docstring else ""
    section = re.split(r"^\s*Returns:", section, maxsplit=1, flags=re.M)[0]
    name, names_indent = None, _indent(section)
    for line in section.splitlines():
        entry = _ARGS_ENTRY.match(line)
        if entry and (name is None or len(line) - len(line.lstrip()) <= names_indent):
            name = entry.group(1)
            described[name] = entry.group(2)
        elif name is not None:
            described[name] += " " + line.strip()
    return described


def _indent(section: str) -> int:
    """Indentation of the argument names (the least indented non-empty line)."""
    return min((len(line) - len(line.lstrip()) for line in section.splitlines() if line.strip()), default=0)


def read_promises(docstring: str) -> Promises:
    """The rules, one per promise:

    * ``images`` described as ``[B, 3, H, W]`` -> :attr:`Promises.image_batches`;
    * a ``batch_size`` argument that bounds the inputs per pass ("at most this many") ->
      :attr:`Promises.chunked_by_batch_size`;
    * the docstring says hooks are removed, or the model must be left as it was ->
      :attr:`Promises.cleans_up_on_error` (a promise that only means something if it also
      holds when something raises halfway).
    """
    arguments = argument_descriptions(docstring)
    text = " ".join(docstring.split()).lower()
    return Promises(
        image_batches="[b, 3, h, w]" in arguments.get("images", "").lower(),
        chunked_by_batch_size="at most" in arguments.get("batch_size", "").lower(),
        cleans_up_on_error=("hook" in text and ("remove" in text or "no hook" in text or "leaves no" in text))
        or "left exactly as it was" in text,
    )


def batch_sizes_to_try(work: int, usual: int) -> list[int]:
    """Batch sizes for ``work`` inputs: the usual one, 1, one that does not divide ``work``
    (the last chunk is smaller), and one larger than ``work`` (a single, partial chunk)."""
    not_dividing = next((size for size in range(2, work) if work % size), None)
    sizes = [usual, 1] + ([not_dividing] if not_dividing else []) + [work + 1]
    return list(dict.fromkeys(sizes))


def image_batches_to_try(images: torch.Tensor) -> list[torch.Tensor]:
    """``images`` and its first image alone as a batch of one, ``[1, 3, H, W]``."""
    return [images, images[:1]] if images.shape[0] > 1 else [images]


class InjectedError(RuntimeError):
    """Raised from inside the model by :func:`failing_forward`."""


@contextmanager
def failing_forward(model: nn.Module) -> Iterator[None]:
    """While active, every forward pass of ``model`` raises :class:`InjectedError` at its end,
    after the student's own hooks on its layers have run: the error path of a function that
    registers hooks or changes flags. Our own hook is gone when the block ends."""

    def fail_here(module: nn.Module, inputs: object, output: object) -> None:
        raise InjectedError("an error raised inside the model (injected by the check)")

    handle = model.register_forward_hook(fail_here)
    try:
        yield
    finally:
        handle.remove()


def call_expecting_failure(call: Callable[[], object]) -> BaseException | None:
    """Run ``call``; return what it raised (it should raise), None if it returned."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - any error is the expected outcome here
        return error
    return None
