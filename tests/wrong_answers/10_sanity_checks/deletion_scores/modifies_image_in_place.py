# Wrong answer: deletes pixels progressively in the caller's image.
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
    order = torch.argsort(saliency_map.flatten(), descending=True, stable=True)
    pixels = order.numel()
    flat = image.view(3, -1)  # a view: writing into it changes the caller's image
    perturbed = []
    for k in range(steps + 1):
        flat[:, order[:k * pixels // steps]] = baseline
        perturbed.append(image.clone())
    perturbed = torch.stack(perturbed)
    with torch.inference_mode():
        return torch.cat([model(perturbed[i:i + batch_size]).softmax(dim=1)[:, target]
                          for i in range(0, steps + 1, batch_size)])
