# Wrong answer: compares with the change of the softmax probability.
def completeness_error(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    baseline: torch.Tensor,
    attributions: torch.Tensor,
) -> float:
    """How far the attributions are from adding up (the completeness axiom).

    Args:
        model: classifier, images [N, 3, H, W] -> logits [N, C].
        image: x, [3, H, W].
        target: the class whose logit f was explained.
        baseline: x', [3, H, W].
        attributions: [3, H, W], e.g. from integrated_gradients_map.
    Returns:
        sum(attributions) - (f(x) - f(x')), one signed float (0 = complete).
    """
    with torch.no_grad():
        logits = model(torch.stack([image, baseline])).softmax(dim=1)[:, target]
    return float(attributions.sum() - (logits[0] - logits[1]))
