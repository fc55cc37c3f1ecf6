"""The cases every check runs beyond its common path come from its exercise's docstring.

Each solution's docstring (what the student reads) is parsed with ``read_promises``; the check
module's ``PROMISES`` must declare exactly that, and each declared promise must catch the slip it
exists for (a squeezed batch of one, a dropped last chunk, hooks left after an error).
"""

from __future__ import annotations

import ast
import importlib
import re

import pytest
import torch
from exercise_cells import define, solution_without_markers
from torch import nn

from saliencylab.checks import CheckFailed, check_deletion_scores, check_integrated_gradients_map, check_occlusion_map
from saliencylab.checks._promises import (
    InjectedError,
    Promises,
    argument_descriptions,
    batch_sizes_to_try,
    failing_forward,
    image_batches_to_try,
    read_promises,
)

# notebook -> (check module, its exercises)
EXERCISES = {
    "01_linear_models": ("nb01_linear_models", ("input_gradient", "gradient_times_input")),
    "02_saliency": ("nb02_saliency", ("saliency_map",)),
    "03_guided_backprop": ("nb03_guided_backprop", ("guided_backprop_map", "deconvnet_map")),
    "04_smoothgrad": ("nb04_smoothgrad", ("smoothgrad_map",)),
    "05_gradcam": ("nb05_gradcam", ("gradcam_map",)),
    "06_occlusion": ("nb06_occlusion", ("occlusion_map",)),
    "07_fooling_images": ("nb07_fooling_images", ("fooling_step", "make_fooling_image")),
    "08_class_visualization": ("nb08_class_visualization", ("class_visualization_step",)),
    "09_integrated_gradients": ("nb09_integrated_gradients", ("integrated_gradients_map", "completeness_error")),
    "10_sanity_checks": ("nb10_sanity_checks", ("cascading_randomization",)),
    "11_faithfulness": ("nb11_faithfulness", ("deletion_scores",)),
    "12_transfer_learning": ("nb12_transfer_learning", ("share_of_map_inside",)),
    "13_find_the_shortcut": ("nb13_find_the_shortcut", ("mark_share",)),
}
CASES = [(notebook, module, exercise) for notebook, (module, names) in EXERCISES.items() for exercise in names]


def docstring_of(notebook: str, exercise: str) -> str:
    tree = ast.parse(solution_without_markers(notebook, exercise))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == exercise)
    return ast.get_docstring(function) or ""


@pytest.mark.parametrize("notebook, module, exercise", CASES, ids=[c[2] for c in CASES])
def test_each_check_declares_what_its_exercises_docstring_promises(notebook, module, exercise):
    declared = getattr(importlib.import_module(f"saliencylab.checks.{module}"), "PROMISES", {})
    assert declared.get(exercise, Promises()) == read_promises(docstring_of(notebook, exercise))


def test_the_promises_the_course_makes():
    """So a parsing rule that silently stops matching shows up here, not as fewer cases."""
    promised = {exercise: read_promises(docstring_of(notebook, exercise)) for notebook, _, exercise in CASES}
    assert sorted(e for e, p in promised.items() if p.image_batches) == [
        "deconvnet_map", "gradcam_map", "guided_backprop_map", "mark_share", "saliency_map"]
    assert sorted(e for e, p in promised.items() if p.chunked_by_batch_size) == [
        "deletion_scores", "integrated_gradients_map", "occlusion_map", "smoothgrad_map"]
    assert sorted(e for e, p in promised.items() if p.cleans_up_on_error) == [
        "cascading_randomization", "deconvnet_map", "gradcam_map", "guided_backprop_map"]


def test_argument_descriptions_follow_continuation_lines():
    doc = """Do it.

    Args:
        images: [B, 3, H, W] float tensor
            in [0, 1].
        batch_size: at most this many
            images per pass.
    Returns:
        [B, H, W].
    """
    assert argument_descriptions(doc) == {
        "images": "[B, 3, H, W] float tensor in [0, 1].",
        "batch_size": "at most this many images per pass.",
    }
    assert read_promises(doc) == Promises(image_batches=True, chunked_by_batch_size=True)
    assert read_promises("No arguments described.") == Promises()


@pytest.mark.parametrize("work, usual", [(24, 5), (8, 3), (6, 4), (11, 4), (1, 1), (2, 8)])
def test_batch_sizes_include_one_a_non_divisor_and_more_than_the_work(work, usual):
    sizes = batch_sizes_to_try(work, usual)
    assert sizes[0] == usual and 1 in sizes and work + 1 in sizes and len(sizes) == len(set(sizes))
    if work > 2 and any(work % s for s in range(2, work)):
        assert any(1 < s < work and work % s for s in sizes)


def test_a_batch_of_one_is_tried_beside_the_batch():
    images = torch.rand(3, 3, 4, 4)
    batches = image_batches_to_try(images)
    assert [b.shape[0] for b in batches] == [3, 1] and torch.equal(batches[1][0], images[0])
    assert len(image_batches_to_try(images[:1])) == 1


def test_failing_forward_raises_inside_the_model_and_leaves_no_hook():
    model = nn.Sequential(nn.Linear(2, 2))
    with failing_forward(model), pytest.raises(InjectedError):
        model(torch.zeros(1, 2))
    assert not model._forward_hooks
    model(torch.zeros(1, 2))


# ---- each promise catches the slip it is there for


def _with_edit(notebook: str, exercise: str, old: str, new: str):
    source = solution_without_markers(notebook, exercise)
    assert source.count(old) == 1, old
    return define(source.replace(old, new), exercise)


def test_dropping_the_last_partial_chunk_is_caught_at_a_batch_size_that_does_not_divide():
    source = solution_without_markers("06_occlusion", "occlusion_map")
    loop = re.search(r"for start in range\(0, len\((\w+)\), batch_size\):", source)
    assert loop, "the occlusion solution batches with `for start in range(0, len(...), batch_size)`"
    dropped = source.replace(loop.group(0), f"for start in range(0, len({loop.group(1)}) - batch_size + 1, batch_size):")
    with pytest.raises(CheckFailed):
        check_occlusion_map(define(dropped, "occlusion_map"))


@pytest.mark.parametrize("check, notebook, exercise", [
    (check_integrated_gradients_map, "09_integrated_gradients", "integrated_gradients_map"),
    (check_deletion_scores, "11_faithfulness", "deletion_scores"),
])
def test_a_batch_size_of_one_and_one_larger_than_the_work_pass_for_the_solution(check, notebook, exercise, capsys):
    check(define(solution_without_markers(notebook, exercise), exercise))
    assert "batch_size 1 and" in capsys.readouterr().out
