def input_gradient(model, image, target):
    # Mistake: .backward() also fills the parameters' .grad.
    x = image.detach().clone().requires_grad_(True)
    logit = model(x.unsqueeze(0))[0, target]
    logit.backward()
    return x.grad
