def input_gradient(model, image, target):
    # Mistake: differentiates the softmax probability instead of the logit.
    x = image.detach().clone().requires_grad_(True)
    probabilities = model(x.unsqueeze(0)).softmax(dim=1)
    (gradient,) = torch.autograd.grad(probabilities[0, target], x)
    return gradient
