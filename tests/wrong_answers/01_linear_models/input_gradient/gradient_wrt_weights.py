def input_gradient(model, image, target):
    # Mistake: differentiates with respect to the weights instead of the input.
    logit = model(image.unsqueeze(0))[0, target]
    (gradient,) = torch.autograd.grad(logit, model.weight)
    return gradient
