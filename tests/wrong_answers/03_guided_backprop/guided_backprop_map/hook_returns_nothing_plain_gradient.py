RECTIFIED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def guided_backprop_map(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Guided-backprop gradients of each image's target logit (Springenberg et al. 2014).

    Args:
        model: classifier in eval mode, images [B, 3, H, W] -> logits [B, C]; its ReLUs are
            nn.ReLU / nn.ReLU6 modules (in-place ones included).
        images: [B, 3, H, W] float tensor in [0, 1].
        target: LongTensor [B], the class to explain for each image.
    Returns:
        [B, 3, H, W]: d logit_target / d image with 1[g > 0] applied at every ReLU/ReLU6 call.
    The hooks are removed before returning (also when an error is raised), and the
    parameters' .grad is never touched.
    """
    def keep_positive(grad: torch.Tensor) -> torch.Tensor:
        grad = grad * (grad > 0)  # autograd's ReLU backward then multiplies by 1[x > 0]

    def on_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        output.register_hook(keep_positive)

    handles = [m.register_forward_hook(on_forward) for m in model.modules()
               if isinstance(m, RECTIFIED_ACTIVATIONS)]
    try:
        x = images.detach().clone().requires_grad_(True)
        score = model(x).gather(1, target.view(-1, 1)).sum()
        (gradients,) = torch.autograd.grad(score, x)
    finally:
        for handle in handles:
            handle.remove()
    return gradients
