def saliency_map(model, images, target):
    targets = torch.as_tensor(target).reshape(-1).expand(len(images))  # LongTensor [B]
    # Mistake: no absolute value before the max over channels.
    x = images.detach().clone().requires_grad_(True)
    scores = model(x)[torch.arange(len(x)), targets].sum()
    (gradients,) = torch.autograd.grad(scores, x)
    return gradients.amax(dim=1)
