"""Feedback for the notebook exercises: ``check_<exercise>(student_fn)``.

Each check runs the student's function on fixed inputs, compares it with the reference
implementation and, on failure, raises :class:`CheckFailed` naming the likely mistake
(wrong shape, forgot the absolute value, used probabilities instead of logits, ...).
On success it prints what was expected and what was got.

One module per notebook (``nb01_linear_models.py`` ...); every public ``check_*`` is
re-exported here.
"""

from __future__ import annotations

import importlib
import pkgutil

from saliencylab.checks._common import CheckFailed
from saliencylab.checks._integrity import ReferenceImplementationCalled, TamperingError, capture

__all__ = ["CheckFailed", "TamperingError", "ReferenceImplementationCalled"]

for _module_info in pkgutil.iter_modules(__path__):
    if _module_info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_module_info.name}")
    for _name in getattr(_module, "__all__", []):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)

capture()  # what the checks rely on, recorded before any student code runs
