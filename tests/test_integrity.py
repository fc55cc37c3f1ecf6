"""The checks' run-time tamper evidence: what they rely on is verified before and after, and the
reference implementation of an exercise trips a wire when the student's function calls it.

Cheats here are written to get past the static audit (``tools/audit.py``), as a determined
student would; honest functions, right or wrong, are never flagged.
"""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import torch

import saliencylab
import saliencylab.attribution
import saliencylab.checks as checks
from saliencylab.checks import CheckFailed, ReferenceImplementationCalled, TamperingError, _integrity
from saliencylab.checks import check_saliency_map


def honest_saliency_map(model, images, target):
    x = images.detach().clone().requires_grad_(True)
    targets = torch.as_tensor(target).reshape(-1).expand(len(x)) if torch.as_tensor(target).numel() == 1 \
        else torch.as_tensor(target)
    score = model(x).gather(1, targets.view(-1, 1)).sum()
    (gradient,) = torch.autograd.grad(score, x)
    return gradient.abs().amax(dim=1)


def wrong_saliency_map(model, images, target):  # an honest mistake: no absolute value
    x = images.detach().clone().requires_grad_(True)
    targets = torch.as_tensor(target).reshape(-1).expand(len(x)) if torch.as_tensor(target).numel() == 1 \
        else torch.as_tensor(target)
    (gradient,) = torch.autograd.grad(model(x).gather(1, targets.view(-1, 1)).sum(), x)
    return gradient.amax(dim=1)


@pytest.fixture(autouse=True)
def nothing_left_tampered():
    yield
    assert _integrity.tampered() == []
    assert sys.getprofile() is None


def test_honest_code_passes_and_prints_its_verdict(capsys):
    check_saliency_map(honest_saliency_map)
    assert "✓ check_saliency_map passed: " in capsys.readouterr().out


def test_an_honest_mistake_is_a_check_failure_not_tampering():
    with pytest.raises(CheckFailed) as failure:
        check_saliency_map(wrong_saliency_map)
    assert not isinstance(failure.value, TamperingError)
    assert "absolute value" in str(failure.value)


def hidden_reference(model, images, target):
    return getattr(saliencylab.attribution, "sal" + "iency")(model, images, target)


def swallowed_reference(model, images, target):
    try:
        getattr(saliencylab.attribution, "sal" + "iency")(model, images, 10**6)  # raises, and is caught
    except Exception:
        pass
    return honest_saliency_map(model, images, target)


@pytest.mark.parametrize("student_fn", [saliencylab.attribution.saliency, hidden_reference, swallowed_reference],
                         ids=["the reference itself", "looked up by a built name", "called and the error caught"])
def test_calling_the_reference_trips_the_wire_and_shows_no_pass(student_fn, capsys):
    with pytest.raises(ReferenceImplementationCalled, match=r"saliency_map called saliencylab's reference"):
        check_saliency_map(student_fn)
    assert "✓" not in capsys.readouterr().out


def test_other_library_functions_are_allowed():
    from saliencylab._core import select_logits

    def uses_building_blocks(model, images, target):
        x = images.detach().clone().requires_grad_(True)
        targets = torch.as_tensor(target).reshape(-1).expand(len(x)) if torch.as_tensor(target).numel() == 1 \
            else torch.as_tensor(target)
        (gradient,) = torch.autograd.grad(select_logits(model(x), targets).sum(), x)
        return gradient.abs().amax(dim=1)

    check_saliency_map(uses_building_blocks)


def module_dict(module):
    return getattr(module, "__di" + "ct__")  # past the static audit


@pytest.mark.parametrize("owner, name", [(torch, "allclose"), (np, "allclose"),
                                         (sys.modules["saliencylab.checks._common"], "close"),
                                         (sys.modules["saliencylab.checks.nb02_saliency"], "diagnose")])
def test_a_patch_made_before_the_check_is_named(owner, name):
    original = module_dict(owner)[name]
    module_dict(owner)[name] = lambda *args, **kwargs: True
    try:
        with pytest.raises(TamperingError, match=rf"before check_saliency_map ran: .*{name} was replaced"):
            check_saliency_map(honest_saliency_map)
    finally:
        module_dict(owner)[name] = original


def test_a_patch_made_inside_the_student_function_is_named():
    original = torch.Tensor.allclose

    def zeros_and_patch(model, images, target):
        setattr_ = type.__setattr__
        setattr_(torch.Tensor, "allclose", lambda *args, **kwargs: True)
        return torch.zeros(images.shape[0], *images.shape[2:])

    try:
        with pytest.raises(TamperingError, match=r"while check_saliency_map ran: torch.Tensor.allclose was replaced"):
            check_saliency_map(zeros_and_patch)
    finally:
        torch.Tensor.allclose = original


def test_changing_a_library_setting_is_not_tampering(capsys):
    core = sys.modules["saliencylab._core"]
    original = core.MAX_AUTO_BATCH_SIZE
    core.MAX_AUTO_BATCH_SIZE = 8  # a student saving memory on a laptop
    try:
        check_saliency_map(honest_saliency_map)
    finally:
        core.MAX_AUTO_BATCH_SIZE = original
    assert "✓ check_saliency_map passed: " in capsys.readouterr().out


def test_changing_a_check_s_tolerance_is_named():
    module = sys.modules["saliencylab.checks.nb02_saliency"]
    original = module.WEIGHT_SCALE
    module_dict(module)["WEIGHT_SCALE"] = 0.0
    try:
        with pytest.raises(TamperingError, match="WEIGHT_SCALE was replaced"):
            check_saliency_map(honest_saliency_map)
    finally:
        module_dict(module)["WEIGHT_SCALE"] = original


def test_swapping_a_function_s_code_is_named():
    common = sys.modules["saliencylab.checks._common"]
    original = common.relative_error.__code__
    common.relative_error.__code__ = (lambda got, expected: 0.0).__code__
    try:
        with pytest.raises(TamperingError, match=r"relative_error was given other code"):
            check_saliency_map(honest_saliency_map)
    finally:
        common.relative_error.__code__ = original


def test_removing_the_profiler_is_flagged():
    def unwatched(model, images, target):
        sys.setprofile(None)
        return hidden_reference(model, images, target)

    with pytest.raises(TamperingError, match="setprofile"):
        check_saliency_map(unwatched)


def test_an_error_in_the_student_function_leaves_nothing_behind():
    def broken(model, images, target):
        raise ValueError("not done yet")

    with pytest.raises(CheckFailed, match="raised ValueError: not done yet") as failure:
        check_saliency_map(broken)
    assert not isinstance(failure.value, TamperingError)
    # the autouse fixture asserts no profiler is left and nothing counts as tampered


def test_the_library_s_rule_classes_trip_the_guided_backprop_wire():
    from saliencylab.attribution.relu_rules import GuidedBackpropRule, rule_at_every_relu
    from saliencylab.checks import check_guided_backprop_map

    def with_library_rules(model, images, target):
        x = images.detach().clone().requires_grad_(True)
        targets = torch.as_tensor(target).reshape(-1).expand(len(x)) if torch.as_tensor(target).numel() == 1 \
            else torch.as_tensor(target)
        with rule_at_every_relu(model, GuidedBackpropRule):
            (gradient,) = torch.autograd.grad(model(x).gather(1, targets.view(-1, 1)).sum(), x)
        return gradient

    with pytest.raises(ReferenceImplementationCalled, match="rule_at_every_relu"):
        check_guided_backprop_map(with_library_rules)


def test_every_check_is_guarded_and_every_exercise_has_its_check():
    table = _integrity.load_reference_table()
    public_checks = {name: getattr(checks, name) for name in checks.__all__ if name.startswith("check_")}
    assert {name.removeprefix("check_") for name in public_checks} == set(table)
    for name, check in public_checks.items():
        assert getattr(check, "__wrapped__", None) is not None, f"{name} is not decorated with exercise_check"
        assert list(inspect.signature(check).parameters)[0] == "student_fn", name
    for paths in table.values():
        for path in paths:
            assert callable(_integrity.resolve(path)), path


@pytest.mark.parametrize("name", [name for name in checks.__all__ if name.startswith("check_")])
def test_an_unfinished_exercise_reads_as_unfinished_not_as_wrong(name):
    """The release's stub raises NotImplementedError; every check lets it through unchanged (a
    student who has not started is told so, not handed a list of mistakes)."""
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        getattr(checks, name)(stub)
