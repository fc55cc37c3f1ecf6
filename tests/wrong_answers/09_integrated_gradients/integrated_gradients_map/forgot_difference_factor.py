# Wrong answer: returns the average gradient along the path, without the (x - x') factor.
def integrated_gradients_map(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    baseline: torch.Tensor,
    steps: int = 32,
    batch_size: int = 8,
) -> torch.Tensor:
    """Integrated Gradients of one image (Sundararajan et al. 2017), midpoint rule, batched.

    Args:
        model: classifier in eval mode, images [N, 3, H, W] in [0, 1] -> logits [N, C].
        image: x, one image [3, H, W].
        target: the class whose LOGIT is explained.
        baseline: x', the starting point of the path, [3, H, W] (e.g. torch.zeros_like(image)).
        steps: m, the number of points on the path: alpha_k = (k + 0.5) / m, k = 0 .. m-1.
        batch_size: at most this many path points go through the model in one pass.
    Returns:
        [3, H, W] signed attributions: (x - x') * (1/m) * sum_k grad f(x' + alpha_k (x - x')).
    """
    difference = image - baseline
    alphas = (torch.arange(steps, dtype=image.dtype, device=image.device) + 0.5) / steps
    gradient_sum = torch.zeros_like(image)
    for start in range(0, steps, batch_size):
        alpha = alphas[start:start + batch_size].view(-1, 1, 1, 1)  # [n, 1, 1, 1]
        points = (baseline + alpha * difference).requires_grad_(True)  # [n, 3, H, W]
        score = model(points)[:, target].sum()
        (gradients,) = torch.autograd.grad(score, points)
        gradient_sum += gradients.sum(dim=0)
    return gradient_sum / steps
