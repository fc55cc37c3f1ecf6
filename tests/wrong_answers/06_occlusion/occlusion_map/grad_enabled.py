# Wrong answer: runs the forward passes with autograd on (forgot torch.inference_mode()).
def occlusion_map(model: nn.Module, image: torch.Tensor, target: int, window: int, stride: int,
                  baseline: float, batch_size: int) -> torch.Tensor:
    """Occlusion map of one image (Zeiler & Fergus 2013), batched.

    Args:
        model: classifier, images [N, 3, H, W] in [0, 1] -> logits [N, C].
        image: one image [3, H, W].
        target: the class index to explain.
        window: side of the square window, in pixels.
        stride: step between windows; windows start at 0, stride, 2*stride, ... as long as
            they fit inside the image (start + window <= H, and the same for W).
        baseline: the value the window is filled with (0.0 black, 0.5 grey).
        batch_size: at most this many occluded images per forward pass.
    Returns:
        [H, W]: for each pixel, the mean over the windows that cover it of the DROP of the
        target logit, f(image) - f(occluded image). Pixels no window covers are 0.
    """
    height, width = image.shape[-2:]
    corners = [(y, x) for y in range(0, height - window + 1, stride)
               for x in range(0, width - window + 1, stride)]
    total = torch.zeros(height, width, device=image.device)
    count = torch.zeros(height, width, device=image.device)
    clean_score = model(image[None])[0, target]
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        occluded = image.repeat(len(chunk), 1, 1, 1)  # [n, 3, H, W], a copy
        for copy, (y, x) in zip(occluded, chunk):
            copy[:, y:y + window, x:x + window] = baseline
        drops = clean_score - model(occluded)[:, target]  # [n]
        for drop, (y, x) in zip(drops, chunk):
            total[y:y + window, x:x + window] += drop
            count[y:y + window, x:x + window] += 1
    return total / count.clamp(min=1)
