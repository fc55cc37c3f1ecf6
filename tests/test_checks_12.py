"""The check of notebook 12_transfer_learning: the reference solution passes, the library's
``share_inside`` agrees with it, and every wrong answer in tests/wrong_answers/ is caught with
the explanation of its mistake."""

from __future__ import annotations

import pytest
import torch
from exercise_cells import cell_source, define, wrong_answer, wrong_answer_stems

from saliencylab import SaliencyLabError
from saliencylab.checks import CheckFailed, ReferenceImplementationCalled, check_share_of_map_inside
from saliencylab.checks.nb12_transfer_learning import _share_of_map_inside_mistakes, fixed_boxes, fixed_maps
from saliencylab.metrics import share_inside

NOTEBOOK, EXERCISE = "12_transfer_learning", "share_of_map_inside"

# What the check must say for each wrong answer (a phrase of its explanation).
SHARE_MISTAKES = {
    "inclusive_end": "the box's end is exclusive",
    "swapped_x_and_y": "you read the box as (x0, y0, x1, y1)",
    "area_share_ignores_map": "the box's share of the pixels",
    "ratio_of_means": "a ratio of densities",
    "total_of_the_batch": "divided by the total of the whole batch",
    "masked_in_place": "changed the maps it was given",
    "one_number_for_the_batch": "One share per map",
}


@pytest.fixture(scope="module")
def reference_share():
    return define(cell_source(NOTEBOOK, EXERCISE), EXERCISE)


def test_reference_passes_and_says_what_it_compared(reference_share, capsys):
    check_share_of_map_inside(reference_share)
    out = capsys.readouterr().out
    assert "check_share_of_map_inside passed" in out and "(2, 12, 16)" in out and "(1, 12, 16)" in out


def test_reference_passes_on_other_maps_and_boxes(reference_share):
    maps = torch.rand(3, 10, 7, generator=torch.Generator().manual_seed(1))
    check_share_of_map_inside(reference_share, maps=maps, boxes=torch.tensor([[0, 0, 10, 7], [3, 2, 4, 3], [1, 5, 9, 7]]))


def test_library_share_inside_passes_the_check_but_is_flagged_inside_the_exercise():
    library = lambda maps, boxes: share_inside(maps, boxes)  # noqa: E731
    check_share_of_map_inside.__wrapped__(library)
    with pytest.raises(ReferenceImplementationCalled):
        check_share_of_map_inside(library)


def test_every_mistake_gives_another_answer_on_the_fixed_inputs():
    """Otherwise two mistakes (or a mistake and the right answer) could not be told apart."""
    maps, boxes = fixed_maps(), fixed_boxes()
    expected = share_inside(maps, boxes)
    results = [expected] + list(_share_of_map_inside_mistakes(maps, boxes).values())
    for i, first in enumerate(results):
        for second in results[i + 1:]:
            assert (first - second).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(wrong_answer_stems(NOTEBOOK, EXERCISE)))
def test_wrong_answer_is_named(name):
    assert name in SHARE_MISTAKES, f"add the message expected for {name} to SHARE_MISTAKES"
    student_fn = wrong_answer(NOTEBOOK, EXERCISE, name)
    with pytest.raises(CheckFailed) as caught:
        check_share_of_map_inside(student_fn)
    assert SHARE_MISTAKES[name] in str(caught.value)


def test_check_needs_maps_and_boxes_together():
    with pytest.raises(ValueError, match="both maps= and boxes="):
        check_share_of_map_inside(share_inside, maps=fixed_maps())


def test_check_reports_an_unexplained_difference(reference_share):
    def slightly_off(maps, boxes):
        return reference_share(maps, boxes) * 1.01

    with pytest.raises(CheckFailed, match="differs from the reference"):
        check_share_of_map_inside(slightly_off)


def test_share_inside_basics():
    uniform = torch.ones(4, 4)
    assert share_inside(uniform, [0, 0, 2, 2]) == pytest.approx(0.25)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2] = True
    assert torch.allclose(share_inside(torch.ones(2, 4, 4), masks), torch.tensor([0.5, 0.5]))
    with pytest.raises(SaliencyLabError, match="non-negative"):
        share_inside(-uniform, [0, 0, 2, 2])
    with pytest.raises(SaliencyLabError, match="zero everywhere"):
        share_inside(torch.zeros(4, 4), [0, 0, 2, 2])
    with pytest.raises(SaliencyLabError, match="empty or reversed"):
        share_inside(uniform, [2, 0, 1, 2])
