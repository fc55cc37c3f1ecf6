def saliency_map(model, images, target):
    targets = torch.as_tensor(target).reshape(-1).expand(len(images))  # LongTensor [B]
    # Mistake: keeps the channel dimension (returns [B, 3, H, W]).
    x = images.detach().clone().requires_grad_(True)
    scores = model(x)[torch.arange(len(x)), targets].sum()
    (gradients,) = torch.autograd.grad(scores, x)
    return gradients.abs()
