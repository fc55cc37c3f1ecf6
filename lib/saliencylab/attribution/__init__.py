"""Attribution methods: which parts of this image made the network say this class?

Every method has the same call shape::

    maps = method(model, images, target=None, **options)

* ``images``: ``[B, 3, H, W]`` floats in ``[0, 1]`` (one ``[3, H, W]`` image is returned
  without the batch dimension).
* ``target``: ``None`` (each image's top class), an ``int``, or one class per image. The
  requested class is always the one explained.
* Result on the images' device: ``[B, H, W]`` per-pixel maps, or ``[B, 3, H, W]`` with
  ``reduce=None`` (Integrated Gradients defaults to that: its attributions are signed sums).

Gradient methods: :func:`saliency`, :func:`guided_backprop`, :func:`deconvnet`,
:func:`smoothgrad`, :func:`integrated_gradients`. Class maps from a layer: :func:`gradcam`,
:func:`guided_gradcam`. Perturbation: :func:`occlusion`. Images for a class:
:func:`fooling_image`, :func:`class_visualization`.
"""

from saliencylab.attribution.class_visualization import class_visualization
from saliencylab.attribution.fooling import fooling_image
from saliencylab.attribution.gradcam import gradcam, guided_gradcam
from saliencylab.attribution.integrated_gradients import integrated_gradients
from saliencylab.attribution.occlusion import occlusion, recompute_profile
from saliencylab.attribution.relu_rules import deconvnet, guided_backprop
from saliencylab.attribution.saliency import saliency
from saliencylab.attribution.smoothgrad import smoothgrad

__all__ = [
    "saliency",
    "guided_backprop",
    "deconvnet",
    "smoothgrad",
    "gradcam",
    "guided_gradcam",
    "integrated_gradients",
    "occlusion",
    "recompute_profile",
    "fooling_image",
    "class_visualization",
]
