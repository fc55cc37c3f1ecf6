# Wrong answer: asks the randomised model for its top class at every step.
def cascading_randomization(
    model: nn.Module,
    image: torch.Tensor,
    method,
    target: int | None,
    layer_groups: list[list[str]],
    seed: int = 0,
) -> torch.Tensor:
    """Maps of one image as the model is randomised from the top down (Adebayo et al. 2018).

    Args:
        model: the trained classifier. It must be left exactly as it was: randomise a copy.
        image: [3, H, W] in [0, 1].
        method: an attribution method, method(model, images [1, 3, H, W], target=int) -> [1, H, W].
        target: the class to explain at EVERY step; None = the class the trained model predicts.
        layer_groups: module names, top (logits) first, one list per step,
            e.g. [["classifier.fc"], ["features.head.0", "features.head.1"], ...].
        seed: step k (1, 2, ...) re-initialises its group with reinitialise(copy, group, seed + k).
    Returns:
        [len(layer_groups) + 1, H, W]: maps[0] from the trained model, maps[k] after
        randomising groups 1..k (cumulative: the groups of earlier steps stay random).
    """
    randomised = copy.deepcopy(model)  # the caller's model is never touched
    if target is None:
        with torch.no_grad():
            target = int(model(image[None]).argmax())  # decided once, on the trained model
    maps = [method(randomised, image[None], target=target)[0]]
    for step, group in enumerate(layer_groups, start=1):
        reinitialise(randomised, group, seed + step)  # groups 1..step are now random
        with torch.no_grad():
            target = int(randomised(image[None]).argmax())
        maps.append(method(randomised, image[None], target=target)[0])
    return torch.stack(maps)
