def input_gradient(model, image, target):
    # Mistake: hard-codes the linear-model answer (the weight row) instead of using autograd,
    # so it fails for any other model.
    return model.weight[target].detach().clone()
