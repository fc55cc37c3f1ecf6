def saliency_map(model, images, target):
    targets = torch.as_tensor(target).reshape(-1).expand(len(images))  # LongTensor [B]
    # Mistake: differentiates softmax probabilities instead of logits.
    x = images.detach().clone().requires_grad_(True)
    probabilities = model(x).softmax(dim=1)
    scores = probabilities[torch.arange(len(x)), targets].sum()
    (gradients,) = torch.autograd.grad(scores, x)
    return gradients.abs().amax(dim=1)
