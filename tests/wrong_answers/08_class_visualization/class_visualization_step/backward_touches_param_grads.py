def class_visualization_step(model, image, target, lr, l2_reg):
    """One step of gradient *ascent* on J(x) = s_target(x) - l2_reg * ||x - 0.5||^2.

    Args:
        model: classifier; [1, 3, H, W] images in [0, 1] -> logits [1, C].
        image: [1, 3, H, W] current image in [0, 1]. Must not be modified.
        target: int, the class whose score (logit) s_target is maximised.
        lr: float, the step size: the root-mean-square change of one pixel value.
        l2_reg: float, the weight of the L2 penalty that pulls pixels towards grey (0.5).
    Returns:
        [1, 3, H, W] new image clamp(x + lr * g / rms(g), 0, 1), where g = dJ/dx and
        rms(g) = sqrt(mean(g ** 2)); a plain tensor (no autograd graph).
    """
    x = image.detach().clone().requires_grad_(True)
    objective = model(x)[0, target] - l2_reg * ((x - 0.5) ** 2).sum()
    objective.backward()
    grad = x.grad
    rms = grad.square().mean().sqrt()
    return (image.detach() + lr * grad / rms).clamp(0, 1)
