def saliency_map(model, images, target):
    targets = torch.as_tensor(target).reshape(-1).expand(len(images))  # LongTensor [B]
    # Mistake: averages the scores over the batch, which divides every map by B.
    x = images.detach().clone().requires_grad_(True)
    scores = model(x)[torch.arange(len(x)), targets].mean()
    (gradients,) = torch.autograd.grad(scores, x)
    return gradients.abs().amax(dim=1)
