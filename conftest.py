"""Test-run wiring shared by tests/ and the nbval run over solutions/.

`make test` runs pytest-xdist with ``--dist loadgroup``. Every test is put in a group here so
that what must share one process does: all cells of one notebook under nbval (they share a
kernel), all grading tests of one assignment (they share one autograde run and one kernel), and
otherwise all tests of one file (they share module-scoped fixtures such as loaded models).
"""

from __future__ import annotations

import pytest


# tryfirst: xdist's own hook turns the marks into the "@group" suffix of each node id.
@pytest.hookimpl(tryfirst=True)
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


@pytest.hookimpl(optionalhook=True)  # so that `pytest -p no:xdist` still runs
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """Stop at once when xdist did not apply the groups (runs in the controller).

    Without them nbval's cells are spread over both workers, each cell runs in a fresh kernel,
    and every notebook fails with NameErrors. It happened with pytest 9.2, whose node ids no
    longer read the ``_nodeid`` that xdist 3.8 rewrites (hence ``pytest<9.2`` in lib/pyproject).
    """
    if node.config.getvalue("dist") != "loadgroup":
        if any(".ipynb::" in nodeid for nodeid in ids):
            pytest.exit(
                "notebook cells must run in order in one kernel: add `--dist loadgroup` to "
                "`pytest -n N` (as `make test` does), or run the notebooks without -n.",
                returncode=4,
            )
        return
    ungrouped = [nodeid for nodeid in ids if nodeid.rfind("@") <= nodeid.rfind("]")]
    if ungrouped:
        pytest.exit(
            f"pytest-xdist did not group {len(ungrouped)} tests (e.g. {ungrouped[0]}): this pytest "
            "and pytest-xdist do not work together; reinstall with `make setup` (pytest<9.2).",
            returncode=3,
        )
