def fooling_step(model, image, target, step_size):
    """One step of gradient *ascent* on the target logit, of length `step_size` in pixel space.

    Args:
        model: classifier; [1, 3, H, W] images in [0, 1] -> logits [1, C].
        image: [1, 3, H, W] current image in [0, 1]. Must not be modified.
        target: int, the class the image should be pushed towards.
        step_size: float, the L2 length of the step.
    Returns:
        [1, 3, H, W] new image clamp(image + step_size * g / ||g||, 0, 1), where
        g = d model(image)[0, target] / d image; a plain tensor (no autograd graph).
    """
    x = image.detach().clone().requires_grad_(True)
    score = model(x)[0, target]
    score.backward()
    new_image = image.detach() + step_size * x.grad / x.grad.norm()
    return new_image.clamp(0, 1)
