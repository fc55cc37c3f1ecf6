"""The static audit flags tampering and reference calls, and never flags honest code: every
solution and every wrong answer of the course passes it."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import audit  # noqa: E402
import nbtools  # noqa: E402
from exercise_cells import wrong_answers  # noqa: E402


@pytest.mark.parametrize("notebook", nbtools.solution_notebooks(), ids=lambda p: p.stem)
def test_no_solution_is_flagged(notebook):
    source = nbformat.read(str(notebook), as_version=4)
    assert audit.audit_notebook(source, source) == []
    for cell in source.cells:  # each exercise audited as a student's cell would be
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            assert audit.audit_source(cell.source, meta["grade_id"]) == [], meta["grade_id"]


@pytest.mark.parametrize("wrong_answer", wrong_answers(), ids=lambda w: f"{w.exercise}-{w.name}")
def test_no_wrong_answer_is_flagged(wrong_answer):
    # A wrong answer is an honest mistake: it loses points, it is not cheating.
    assert audit.audit_source(wrong_answer.source(), wrong_answer.exercise) == []


CHEATS = {
    "replaces a check": ("check_saliency_map = lambda fn, **kw: None", "replaces the grader function"),
    "redefines a check": ("def check_saliency_map(fn, **kw):\n    pass", "redefines the grader function"),
    "patches torch": ("import torch\ntorch.allclose = lambda *a, **k: True", "patches torch.allclose"),
    "patches numpy by setattr": ("import numpy as np\nsetattr(np, 'allclose', lambda *a: True)", "patches np"),
    "patches the library": ("import saliencylab.checks\nsaliencylab.checks.check_x = print", "patches saliencylab"),
    "sys.modules": ("import sys\nsys.modules['torch'].allclose = None", "sys.modules"),
    "globals": ("globals()['check_saliency_map'] = print", "globals()"),
    "frames": ("import sys\nsys._getframe(1).f_globals['x'] = 1", "_getframe"),
    "exec": ("exec('chec' + 'k_x = print')", "exec"),
    "eval": ("f = eval('lambda x: x')", "eval"),
    "builtins": ("import builtins\nbuiltins.print = None", "builtins"),
    "reference call": ("def saliency_map(model, images, target):\n    return saliency(model, images, target)",
                       "reference implementation saliency() inside saliency_map"),
    "reference by attribute": ("def saliency_map(model, images, target):\n"
                               "    import saliencylab.attribution as a\n    return a.saliency(model, images, target)",
                               "reference implementation"),
    "patches an aliased module": ("import saliencylab.checks as c\nc.check_saliency_map = print", "patches c."),
    "patches a module's __dict__": ("import torch\ntorch.__dict__['allclose'] = max", "__dict__"),
    "deletes from a module": ("import torch\ndelattr(torch, 'allclose')", "patches torch with delattr"),
    "dunder setattr": ("import torch\ntype(torch).__setattr__(torch, 'allclose', max)", "patches torch with __setattr__"),
    "binds a check in a loop": ("for check_saliency_map in [bool]:\n    pass", "replaces the grader function"),
    "binds a check by import": ("from operator import truth as check_saliency_map", "by an import"),
    "patches __main__": ("import __main__\nsetattr(__main__, 'check_saliency_map', bool)", "patches __main__"),
    "removes the profiler": ("import sys\nsys.setprofile(None)", "setprofile"),
    "unwraps a check": ("from saliencylab.checks import check_saliency_map as c\nraw = c.__wrapped__", "__wrapped__"),
}


def test_the_library_s_guided_backprop_rule_is_a_reference_implementation_too():
    source = ("def guided_backprop_map(model, images, target):\n"
              "    with rule_at_every_relu(model, GuidedBackpropRule) as substitution:\n"
              "        return model(images)")
    found = audit.audit_source(source, "guided_backprop_map")
    assert any("rule_at_every_relu() inside" in r for r in found), found
    assert any("uses the library's reference implementation GuidedBackpropRule" in r for r in found), found


@pytest.mark.parametrize("name", CHEATS)
def test_cheats_are_flagged_with_their_reason(name):
    source, reason = CHEATS[name]
    found = audit.audit_source(source, "saliency_map")
    assert any(reason in r for r in found), found


def test_a_student_added_cell_is_audited_and_locked_cells_are_not():
    source = nbformat.read(str(nbtools.solution_notebooks()[1]), as_version=4)
    submission = nbformat.read(str(nbtools.solution_notebooks()[1]), as_version=4)
    submission.cells.insert(5, nbformat.v4.new_code_cell("torch.allclose = lambda *a, **k: True"))
    findings = audit.audit_notebook(submission, source)
    assert [f.cell for f in findings] == ["cell 5"] and "patches torch.allclose" in findings[0].reason
