"""Feedback for the notebook exercises: ``check_<exercise>(student_fn)``.

Each check runs the student's function on fixed inputs, compares it with the reference
implementation and, on failure, raises :class:`CheckFailed` naming the likely mistake
(wrong shape, forgot the absolute value, used probabilities instead of logits, ...).
On success it prints what was expected and what was got. A check that finds something it
relies on changed, or the exercise's reference implementation called, raises
:class:`TamperingError` / :class:`ReferenceImplementationCalled` instead (see ``_integrity``).

One module per notebook (``nb01_linear_models.py`` ...); the small models and inputs several
notebooks share are in ``_fixtures``, how a student's function is called in ``_running``.
"""

from __future__ import annotations

from saliencylab.checks._common import CheckFailed
from saliencylab.checks._integrity import ReferenceImplementationCalled, TamperingError, capture
from saliencylab.checks.nb01_linear_models import check_gradient_times_input, check_input_gradient
from saliencylab.checks.nb02_saliency import check_saliency_map
from saliencylab.checks.nb03_guided_backprop import check_deconvnet_map, check_guided_backprop_map
from saliencylab.checks.nb04_smoothgrad import check_smoothgrad_map
from saliencylab.checks.nb05_gradcam import check_gradcam_map
from saliencylab.checks.nb06_occlusion import check_occlusion_map
from saliencylab.checks.nb07_fooling_images import check_fooling_step, check_make_fooling_image
from saliencylab.checks.nb08_class_visualization import check_class_visualization_step
from saliencylab.checks.nb09_integrated_gradients import check_completeness_error, check_integrated_gradients_map
from saliencylab.checks.nb10_sanity_checks import check_cascading_randomization
from saliencylab.checks.nb11_faithfulness import check_deletion_scores
from saliencylab.checks.nb12_transfer_learning import check_share_of_map_inside
from saliencylab.checks.nb13_find_the_shortcut import check_mark_share

__all__ = [
    "CheckFailed",
    "TamperingError",
    "ReferenceImplementationCalled",
    "check_input_gradient",
    "check_gradient_times_input",
    "check_saliency_map",
    "check_guided_backprop_map",
    "check_deconvnet_map",
    "check_smoothgrad_map",
    "check_gradcam_map",
    "check_occlusion_map",
    "check_fooling_step",
    "check_make_fooling_image",
    "check_class_visualization_step",
    "check_integrated_gradients_map",
    "check_completeness_error",
    "check_cascading_randomization",
    "check_deletion_scores",
    "check_share_of_map_inside",
    "check_mark_share",
]

capture()  # what the checks rely on, recorded before any student code runs
