"""saliencylab: which parts of this image made the network say this class?

Submodules (import what you need)::

    saliencylab.images       load_image, sample_image, SAMPLE_IMAGES, to_tensor, to_numpy_image,
                             side_by_side (two photos as one two-object image, with their boxes)
    saliencylab.models       load_model, default_layer, target_logits(model, images, target)
    saliencylab.digits       load_digits_images (sklearn's digits as [N, 3, 32, 32] images)
    saliencylab.shortcut     plant_mark, mark_classes, shortcut_report: lesson 13's planted
                             shortcut (load_model("digits_cnn_shortcut") and its twin)
    saliencylab.imagenet     ImageNetIndex, predict(model, images, top=5, labels=None), top_class
    saliencylab.attribution  saliency, guided_backprop, deconvnet, smoothgrad, gradcam,
                             guided_gradcam, occlusion, integrated_gradients,
                             fooling_image, class_visualization
    saliencylab.plotting     show_maps, show_grid, show_images, overlay, visualize
    saliencylab.explorers    explore_smoothgrad, explore_occlusion, explore_gradcam,
                             explore_integrated_gradients, explore_class_visualization
                             (ipywidgets: a figure whose parameters are sliders)
    saliencylab.metrics      deletion_curve, insertion_curve, pointing_game, mask_share,
                             share_inside, randomization_test, rank_correlation
    saliencylab.checks       check_<exercise>(student_fn) for each notebook exercise
    saliencylab.lessons      confirm(claim, holds, measured): a lesson's conclusion, asserted

Images are float tensors ``[B, 3, H, W]`` in ``[0, 1]``; every model from ``load_model``
normalises internally.
"""

from saliencylab._core import SaliencyLabError

__version__ = "0.1.0"
__all__ = ["SaliencyLabError", "__version__"]
