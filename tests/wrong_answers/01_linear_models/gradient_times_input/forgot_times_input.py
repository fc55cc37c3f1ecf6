def gradient_times_input(model, image, target):
    # Mistake: returns the gradient without multiplying by the input.
    x = image.detach().clone().requires_grad_(True)
    logit = model(x.unsqueeze(0))[0, target]
    (gradient,) = torch.autograd.grad(logit, x)
    return gradient
