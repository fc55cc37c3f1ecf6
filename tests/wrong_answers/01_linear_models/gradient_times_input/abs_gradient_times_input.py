def gradient_times_input(model, image, target):
    # Mistake: takes |gradient| as for a saliency map, losing the sign of each contribution.
    x = image.detach().clone().requires_grad_(True)
    logit = model(x.unsqueeze(0))[0, target]
    (gradient,) = torch.autograd.grad(logit, x)
    return gradient.abs() * image
