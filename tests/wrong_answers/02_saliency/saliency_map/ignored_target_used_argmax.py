def saliency_map(model, images, target):
    targets = torch.as_tensor(target).reshape(-1).expand(len(images))  # LongTensor [B]
    # Mistake: ignores the requested target and explains the predicted class.
    x = images.detach().clone().requires_grad_(True)
    logits = model(x)
    predicted = logits.argmax(dim=1)
    scores = logits[torch.arange(len(x)), predicted].sum()
    (gradients,) = torch.autograd.grad(scores, x)
    return gradients.abs().amax(dim=1)
