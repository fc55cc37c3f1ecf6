"""The ReLU rules of guided backprop and DeconvNet, one ``autograd.Function`` per table row.

Each rule's backward is checked on hand-made ``x`` and ``g`` against the row of the table in
``saliencylab.attribution.relu_rules``; the substitution is checked to apply exactly one rule per
module call (a ReLU module called twice gets two), and to leave autograd's own ReLU backward out.
The end-to-end results are in test_attribution_gradients.py and test_captum_agreement.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliencylab.attribution.relu_rules import (
    RELU,
    RELU6,
    DeconvNetRule,
    GuidedBackpropRule,
    PlainGradientRule,
    rule_at_every_relu,
)
from saliencylab.checks.nb03_guided_backprop import relu_test_net

# One column per case: x below 0, at 0, in (0, 6), at 6 and above 6, each with g > 0 and g < 0.
X = torch.tensor([-1.0, -1.0, 0.0, 0.0, 2.0, 2.0, 6.0, 6.0, 7.0, 7.0])
G = torch.tensor([3.0, -3.0, 4.0, -4.0, 5.0, -5.0, 6.0, -6.0, 7.0, -7.0])
# The table, row by row, evaluated on X and G by hand.
EXPECTED = {
    # plain gradient  1[x > 0] * g             (ReLU6: 1[0 < x < 6] * g)
    ("plain", "relu"): [0, 0, 0, 0, 5, -5, 6, -6, 7, -7],
    ("plain", "relu6"): [0, 0, 0, 0, 5, -5, 0, 0, 0, 0],
    # DeconvNet       1[g > 0] * g
    ("deconvnet", "relu"): [3, 0, 4, 0, 5, 0, 6, 0, 7, 0],
    ("deconvnet", "relu6"): [3, 0, 4, 0, 5, 0, 6, 0, 7, 0],
    # guided backprop 1[x > 0] * 1[g > 0] * g  (ReLU6: 1[0 < x < 6] * 1[g > 0] * g)
    ("guided", "relu"): [0, 0, 0, 0, 5, 0, 6, 0, 7, 0],
    ("guided", "relu6"): [0, 0, 0, 0, 5, 0, 0, 0, 0, 0],
}
RULES = {"plain": PlainGradientRule, "deconvnet": DeconvNetRule, "guided": GuidedBackpropRule}
ACTIVATIONS = {"relu": (RELU, nn.ReLU()), "relu6": (RELU6, nn.ReLU6())}


@pytest.mark.parametrize("activation_name", ["relu", "relu6"])
@pytest.mark.parametrize("rule_name", ["plain", "deconvnet", "guided"])
def test_each_rule_s_backward_is_its_table_row(rule_name: str, activation_name: str) -> None:
    activation, module = ACTIVATIONS[activation_name]
    x = X.clone().requires_grad_(True)
    y = RULES[rule_name].apply(x, activation)
    torch.testing.assert_close(y, module(X), rtol=0, atol=0)  # forward: the activation itself
    (passed_back,) = torch.autograd.grad(y, x, G)
    expected = torch.tensor(EXPECTED[rule_name, activation_name], dtype=torch.float32)
    torch.testing.assert_close(passed_back, expected, rtol=0, atol=0)


@pytest.mark.parametrize("activation_name", ["relu", "relu6"])
def test_the_plain_row_is_autograd_s_own_backward(activation_name: str) -> None:
    """So the ``1[x > 0]`` (``1[0 < x < 6]``) the guided rule keeps is autograd's own mask,
    boundaries x = 0 and x = 6 included."""
    activation, module = ACTIVATIONS[activation_name]
    x = X.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(PlainGradientRule.apply(x, activation), x, G)
    (autograds,) = torch.autograd.grad(module(x), x, G)
    torch.testing.assert_close(ours, autograds, rtol=0, atol=0)


class ReusedRelu(nn.Module):
    """linear -> relu -> linear -> the same relu -> linear (in place or not)."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.first, self.second, self.out = nn.Linear(6, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.relu = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.first(x))
        return self.out(self.relu(self.second(x)))


def backward_nodes(output: torch.Tensor) -> list[str]:
    """The name of every node of ``output``'s autograd graph, once each."""
    seen, names, stack = set(), [], [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(following for following, _ in node.next_functions)
    return names


@pytest.mark.parametrize(
    "model, module_calls",
    [(ReusedRelu(inplace=False), 2), (ReusedRelu(inplace=True), 2),
     (relu_test_net(inplace_relu=True), 3), (relu_test_net(inplace_relu=False), 3)],
    ids=["reused", "reused_inplace", "check_net_inplace", "check_net"],
)
@pytest.mark.parametrize("rule", [DeconvNetRule, GuidedBackpropRule])
def test_one_rule_per_module_call_and_no_autograd_relu_left(
    model: nn.Module, module_calls: int, rule: type
) -> None:
    """The check net calls an (in-place) ReLU once and one ReLU6 module twice."""
    images = torch.rand(2, 6) if isinstance(model, ReusedRelu) else torch.rand(2, 3, 10, 14)
    with rule_at_every_relu(model.eval(), rule) as substitution:
        output = model(images.requires_grad_(True))
    nodes = backward_nodes(output)
    assert substitution.calls == module_calls
    assert nodes.count(f"{rule.__name__}Backward") == module_calls
    assert not [name for name in nodes if name.startswith(("Relu", "Hardtanh", "Threshold"))]
    assert all(not module._forward_hooks and not module._forward_pre_hooks
               for module in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(output, model(images), rtol=0, atol=0)  # same forward values


def test_a_raising_forward_leaves_no_hook() -> None:
    model = ReusedRelu(inplace=True).eval()
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        with rule_at_every_relu(model, GuidedBackpropRule) as substitution:
            model(torch.rand(2, 7))
    assert substitution.calls == 0
    assert all(not module._forward_hooks and not module._forward_pre_hooks
               for module in model.modules())
