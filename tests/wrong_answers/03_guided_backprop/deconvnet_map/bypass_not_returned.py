def deconvnet_map(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DeconvNet gradients of each image's target logit (Zeiler & Fergus 2013).

    Args:
        model: classifier in eval mode whose ReLUs are nn.ReLU / nn.ReLU6 modules that are
            not in place (the bypass needs the activation's input).
        images: [B, 3, H, W] float tensor in [0, 1].
        target: LongTensor [B], the class to explain for each image.
    Returns:
        [B, 3, H, W]: the backward pass with g -> 1[g > 0] * g at every ReLU/ReLU6 call and
        no forward mask. Hooks removed, parameters' .grad untouched.
    """
    def keep_positive(grad: torch.Tensor) -> torch.Tensor:
        return grad * (grad > 0)

    def on_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        bypass = x + (output - x).detach()  # the value of output, the gradient of the identity
        bypass.register_hook(keep_positive)

    handles = [m.register_forward_hook(on_forward) for m in model.modules()
               if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        x = images.detach().clone().requires_grad_(True)
        score = model(x).gather(1, target.view(-1, 1)).sum()
        (gradients,) = torch.autograd.grad(score, x)
    finally:
        for handle in handles:
            handle.remove()
    return gradients
