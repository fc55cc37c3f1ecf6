def saliency_map(model, images, target):
    targets = torch.as_tensor(target).reshape(-1).expand(len(images))  # LongTensor [B]
    # Mistake: .backward() also fills the parameters' .grad.
    x = images.detach().clone().requires_grad_(True)
    scores = model(x)[torch.arange(len(x)), targets].sum()
    scores.backward()
    return x.grad.abs().amax(dim=1)
