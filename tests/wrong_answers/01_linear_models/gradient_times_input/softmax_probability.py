def gradient_times_input(model, image, target):
    # Mistake: differentiates the softmax probability instead of the logit.
    x = image.detach().clone().requires_grad_(True)
    probability = model(x.unsqueeze(0)).softmax(dim=1)[0, target]
    (gradient,) = torch.autograd.grad(probability, x)
    return gradient * image
