# Wrong answer: sorts the pixels by |map|.
def deletion_scores(
    model: nn.Module,
    image: torch.Tensor,
    saliency_map: torch.Tensor,
    target: int,
    steps: int = 16,
    baseline: float = 0.0,
    batch_size: int = 8,
) -> torch.Tensor:
    """Deletion curve of one image (Petsiuk et al. 2018): delete the most salient pixels first.

    Args:
        model: classifier, images [N, 3, H, W] in [0, 1] -> logits [N, C].
        image: [3, H, W].
        saliency_map: [H, W], larger = more important (used as given, signed or not).
        target: the class whose probability is tracked.
        steps: number of deletion steps; the curve has steps + 1 points.
        baseline: the value deleted pixels get (in all three colour channels).
        batch_size: at most this many perturbed images per forward pass.
    Returns:
        [steps + 1]: for k = 0 .. steps, the softmax probability of `target` when the first
        k * H * W // steps pixels, in order of decreasing saliency, are set to `baseline`.
    """
    height, width = saliency_map.shape
    pixels = height * width
    order = torch.argsort(saliency_map.abs().flatten(), descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(pixels, device=order.device)  # rank[p] = position of pixel p in that order
    counts = torch.arange(steps + 1, device=order.device) * pixels // steps  # pixels deleted at each step
    scores = []
    with torch.inference_mode():
        for start in range(0, steps + 1, batch_size):
            deleted = rank[None] < counts[start:start + batch_size, None]  # [n, H*W]
            deleted = deleted.view(-1, 1, height, width)                     # [n, 1, H, W]
            perturbed = torch.where(deleted, torch.tensor(baseline, dtype=image.dtype), image)  # [n, 3, H, W]
            scores.append(model(perturbed).softmax(dim=1)[:, target])
    return torch.cat(scores)
