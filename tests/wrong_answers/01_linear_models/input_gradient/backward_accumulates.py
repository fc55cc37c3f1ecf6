def input_gradient(model, image, target):
    # Mistake: .backward() on the caller's own image; its .grad accumulates from call to call
    # (zero_grad() clears the model's gradients, not the image's).
    image.requires_grad_(True)
    logit = model(image.unsqueeze(0))[0, target]
    logit.backward()
    model.zero_grad()
    return image.grad
