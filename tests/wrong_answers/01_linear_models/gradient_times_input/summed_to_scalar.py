def gradient_times_input(model, image, target):
    # Mistake: sums the contributions into one number instead of one per input value.
    x = image.detach().clone().requires_grad_(True)
    logit = model(x.unsqueeze(0))[0, target]
    (gradient,) = torch.autograd.grad(logit, x)
    return (gradient * image).sum()
