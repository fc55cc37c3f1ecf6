"""What the lessons share beyond plotting: checking the claims their prose makes.

The notebooks run on other CPUs, thread counts and GPUs, so every conclusion a lesson draws
from a number is tested where the notebook runs, with the margin it really has.
"""

from __future__ import annotations

__all__ = ["confirm"]


def confirm(claim: str, holds: bool, measured: object) -> None:
    """Check a conclusion the lesson's text draws from a result, then print it with a tick.

    Raises ``AssertionError`` ("not true on this machine: <claim> (measured: <measured>)") when
    ``holds`` is false, so a notebook never states what its numbers do not show.
    """
    assert holds, f"not true on this machine: {claim} (measured: {measured})"
    print(f"\u2713 {claim}")
