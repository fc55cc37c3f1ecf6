"""Test-run wiring shared by tests/ and the nbval run over solutions/.

`make test` runs pytest-xdist with ``--dist loadgroup``. Every test is put in a group here so
that what must share one process does: all cells of one notebook under nbval (they share a
kernel), all grading tests of one assignment (they share one autograde run and one kernel), and
otherwise all tests of one file (they share module-scoped fixtures such as loaded models).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        path = item.path
        if path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebooks)
            item.add_marker(pytest.mark.xdist_group(f"nbval-{path.stem}"))
        else:
            item.add_marker(pytest.mark.xdist_group(f"file-{path.name}"))
