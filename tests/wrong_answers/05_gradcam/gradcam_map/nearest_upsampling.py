# Wrong answer: nearest-neighbour upsampling gives blocky squares instead of a smooth map.
def gradcam_map(model: nn.Module, images: torch.Tensor, target, layer: nn.Module) -> torch.Tensor:
    """Grad-CAM maps of the class `target` for a batch of images.

    Args:
        model: classifier in eval mode, images [B, 3, H, W] in [0, 1] -> logits [B, C].
        images: [B, 3, H, W].
        target: one class index (int) for every image, or a LongTensor [B] (one per image).
        layer: the module of `model` whose output A [B, K, h, w] is explained.
    Returns:
        [B, H, W]: relu(sum_k alpha_k A^k) upsampled bilinearly (align_corners=False) to the
        input size, where alpha_k = spatial mean of d logit_target / d A^k.
        Leaves no hook on the model and never touches the parameters' .grad.
    """
    targets = torch.as_tensor(target, device=images.device).reshape(-1).expand(images.shape[0])  # [B]
    stored = {}

    def keep_activation(module, inputs, output):
        stored["activation"] = output  # [B, K, h, w], still part of the autograd graph

    handle = layer.register_forward_hook(keep_activation)
    try:
        with torch.enable_grad():
            # load_model freezes the weights: an input that requires grad gives a graph to differentiate
            logits = model(images.detach().requires_grad_(True))  # [B, C]
        score = logits.gather(1, targets.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, stored["activation"])  # [B, K, h, w]
    finally:
        handle.remove()
    activation = stored["activation"].detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # alpha: [B, K, 1, 1]
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))  # [B, 1, h, w]
    cam = F.interpolate(cam, size=images.shape[-2:], mode="nearest")
    return cam[:, 0]  # [B, H, W]
