def smoothgrad_map(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    samples: int = 25,
    noise_level: float = 0.15,
    batch_size: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SmoothGrad map of one image (Smilkov et al. 2017).

    Args:
        model: classifier in eval mode, images [N, 3, H, W] in [0, 1] -> logits [N, C].
        image: [3, H, W] float tensor.
        target: the class index to explain.
        samples: n, the number of noisy copies whose gradients are averaged.
        noise_level: the noise std as a fraction of the image's value range,
            sigma = noise_level * (image.max() - image.min()).
        batch_size: at most this many noisy copies go through the model in one pass.
        generator: the torch.Generator to draw all the noise from (reproducible maps).
    Returns:
        [H, W]: max over the colour channels of |mean gradient of the target logit|.
    """
    sigma = noise_level * (image.max() - image.min())
    gradient_sum = torch.zeros_like(image)
    for start in range(0, samples, batch_size):
        count = min(batch_size, samples - start)
        noise = torch.randn((count, *image.shape), generator=generator, device=image.device)
        noisy = (image + sigma * noise).requires_grad_(True)
        score = model(noisy)[:, target].sum()
        (gradients,) = torch.autograd.grad(score, noisy)
        gradient_sum += gradients.abs().sum(dim=0)
    mean_gradient = gradient_sum / samples
    return mean_gradient.amax(dim=0)
