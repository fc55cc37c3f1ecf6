def input_gradient(model, image, target):
    # Mistake: forgets to select the target class and differentiates the sum of all logits.
    x = image.detach().clone().requires_grad_(True)
    logits = model(x.unsqueeze(0))
    (gradient,) = torch.autograd.grad(logits.sum(), x)
    return gradient
