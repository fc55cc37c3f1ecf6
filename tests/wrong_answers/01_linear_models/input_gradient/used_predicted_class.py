def input_gradient(model, image, target):
    # Mistake: explains the predicted class instead of the requested target.
    x = image.detach().clone().requires_grad_(True)
    logits = model(x.unsqueeze(0))
    predicted = int(logits.argmax(dim=1))
    (gradient,) = torch.autograd.grad(logits[0, predicted], x)
    return gradient
