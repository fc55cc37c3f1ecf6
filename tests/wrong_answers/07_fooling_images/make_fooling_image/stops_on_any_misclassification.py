def make_fooling_image(model, image, target, step_size, max_steps, step_fn=fooling_step):
    """Push `image` towards class `target` until the model predicts it (a targeted attack).

    Before every step, check the model's prediction: stop as soon as it is `target`.
    Args:
        model: classifier; [1, 3, H, W] images in [0, 1] -> logits [1, C].
        image: [1, 3, H, W] starting image in [0, 1]. Must not be modified.
        target: int, the class the model should end up predicting.
        step_size: float, passed on to step_fn.
        max_steps: int, give up after this many steps.
        step_fn: one step, called as step_fn(model, x, target, step_size) -> new x
            (your fooling_step by default; the tests pass the reference step).
    Returns:
        (fooled [1, 3, H, W], steps_taken: int); steps_taken is 0 when the model already
        predicts `target`, and max_steps when it never got there.
    """
    fooled = image.detach().clone()
    with torch.no_grad():
        original_class = model(fooled).argmax(dim=1).item()
    for steps in range(max_steps):
        with torch.no_grad():
            if model(fooled).argmax(dim=1).item() != original_class:
                return fooled, steps
        fooled = step_fn(model, fooled, target, step_size)
    return fooled, max_steps
