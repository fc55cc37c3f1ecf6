"""How good is a saliency map? Faithfulness, localisation and sanity checks.

Import everything from here (``from saliencylab.metrics import deletion_curve``); each family
lives in its own module:

* :mod:`~saliencylab.metrics.perturbation`: ``deletion_curve`` / ``insertion_curve`` and their
  areas ``auc``, ``deletion_auc``, ``insertion_auc`` (Petsiuk et al. 2018, RISE): remove (or
  add) pixels in order of decreasing attribution and watch the class score. A faithful map
  makes the score fall fast when deleting (low AUC) and rise fast when inserting (high AUC);
  compare against a random map of similar smoothness (see :func:`deletion_curve`).
* :mod:`~saliencylab.metrics.imputation`: ``noisy_linear_imputation`` (ROAD, Rong et al.
  2022): removed pixels filled from their neighbours plus noise, the ``"noisy_linear"``
  baseline of the curves, so that a deletion does not make images the network never saw.
* :mod:`~saliencylab.metrics.localization`: ``pointing_game`` (Zhang et al. 2016): does the
  map's maximum fall on the object? ``mask_share`` (Arras et al. 2022's relevance mass
  accuracy): how much of the map's positive mass lies inside a region, e.g. a planted mark?
  ``share_inside``: the same for maps that are non-negative by construction (Grad-CAM, |gradient|).
* :mod:`~saliencylab.metrics.rank`: ``rank_correlation``, the Spearman correlation between two
  maps, per image (and the Spearman / SSIM statistics the randomisation test compares with).
* :mod:`~saliencylab.metrics.randomization`: ``randomization_test`` and its
  ``RandomizationResult`` (Adebayo et al. 2018): re-initialise the model from the logits down;
  a map that explains the *model* must change, a map that only shows edges of the image will
  not.
* :mod:`~saliencylab.metrics.layer_groups`: ``randomization_groups``, how the randomisation
  test cuts a model into steps.

Maps are ``[B, H, W]`` (or ``[H, W]`` for one image) with the images' height and width, as
every method of ``saliencylab.attribution`` returns them. A map that contains NaN raises a
:class:`~saliencylab.SaliencyLabError` in every metric (it has no ranking and no maximum),
except on a randomised model inside ``randomization_test``, which reports NaN with a warning.
"""

from saliencylab.metrics.imputation import noisy_linear_imputation
from saliencylab.metrics.layer_groups import randomization_groups
from saliencylab.metrics.localization import Boxes, mask_share, pointing_game, share_inside  # noqa: F401
from saliencylab.metrics.perturbation import (  # noqa: F401
    BLUR_KERNEL_SIZE,
    BLUR_SIGMA,
    BaselineLike,
    auc,
    deletion_auc,
    deletion_curve,
    insertion_auc,
    insertion_curve,
)
from saliencylab.metrics.randomization import RandomizationResult, randomization_test
from saliencylab.metrics.rank import rank_correlation

__all__ = [
    "RandomizationResult",
    "auc",
    "deletion_auc",
    "deletion_curve",
    "insertion_auc",
    "insertion_curve",
    "mask_share",
    "noisy_linear_imputation",
    "pointing_game",
    "randomization_groups",
    "randomization_test",
    "rank_correlation",
    "share_inside",
]
# BLUR_KERNEL_SIZE, BLUR_SIGMA, BaselineLike and Boxes stay importable from here, as before the
# split, without being part of __all__.
