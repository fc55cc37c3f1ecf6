"""Which layers the randomisation test re-initialises together, and in which order.

:func:`randomization_groups` cuts a model into steps by heuristics (wrappers opened, containers
opened, neighbours of one output width merged); :func:`resolve_groups` checks the steps a user
gives instead; :func:`group_label` names a step for a table.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from torch import nn

from saliencylab._core import SaliencyLabError

__all__ = ["group_label", "randomization_groups", "resolve_groups"]

Layer = tuple[str, nn.Module]


def randomization_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """The default steps of :func:`~saliencylab.metrics.randomization_test`: groups of module
    names, top first.

    How the model is cut: descend through wrappers that hold a single parameterised child
    (such as ``Sequential(normalise, network)``) to the network's body. Its parameterised
    children are the layers, except that containers (``Sequential``, ``ModuleList``,
    ``ModuleDict``) are opened, recursively; any other module (a conv, a residual or MBConv
    block) is one layer. Then consecutive layers of the same container with the same output
    width (the size of their last parameter: channels or features) form one group: a conv and
    its BatchNorm, or the repeated blocks of one stage. EfficientNet-Lite0 gives 10 steps: the
    classifier, the head conv+BN, its 7 stages of MBConv blocks and the stem conv+BN; a ResNet
    gives fc, layer4 ... layer1 and the stem; VGG merges neighbouring convs of equal width.
    Parameters held directly by the body module itself are not randomised.
    """
    prefix, body = _network_body(model)
    groups: list[tuple[str, ...]] = []
    for siblings in _sibling_runs(prefix, body):
        for run in _same_width_runs(siblings):
            groups.append(tuple(name for name, _ in run))
    return groups[::-1]


def resolve_groups(
    model: nn.Module, layers: Sequence[str | Sequence[str]] | None
) -> list[tuple[str, ...]]:
    """The steps ``layers=`` asks for (default :func:`randomization_groups`), checked against
    ``model``: every name is a module of it with parameters to randomise."""
    if layers is None:
        groups = randomization_groups(model)
    elif isinstance(layers, (str, nn.Module)) or not isinstance(layers, Iterable):
        raise SaliencyLabError(
            "layers must be a list of module names (or of tuples of names), top layer first, "
            f"e.g. ['fc', 'layer4']; got {layers!r}."
        )
    else:
        groups = [(item,) if isinstance(item, str) else tuple(item) for item in layers]
    modules = dict(model.named_modules())
    for name in (name for group in groups for name in group):
        if not isinstance(name, str) or name not in modules:
            close = difflib.get_close_matches(str(name), list(modules), n=3)
            raise SaliencyLabError(
                f"layers: the model has no module named {name!r}"
                + (f"; did you mean {close}?" if close else ".")
                + " Names are those of model.named_modules(); see randomization_groups(model)."
            )
        if not any(True for _ in modules[name].parameters()):
            raise SaliencyLabError(f"layers: module {name!r} has no parameters to randomise.")
    if not groups:
        raise SaliencyLabError("the model has no parameters to randomise.")
    return groups


def group_label(names: tuple[str, ...]) -> str:
    """``("_blocks.4", "_blocks.5", "_blocks.6")`` -> ``"_blocks.4-6"``; else joined by ``+``."""
    parents = {name.rpartition(".")[0] for name in names}
    indices = [name.rpartition(".")[2] for name in names]
    if len(names) > 1 and len(parents) == 1 and all(i.isdigit() for i in indices):
        return f"{names[0]}-{indices[-1]}"  # siblings of one Sequential/ModuleList: a range
    return "+".join(names)


def _network_body(model: nn.Module) -> tuple[str, nn.Module]:
    name, module = "", model
    while True:
        children = _parameterized_children(module)
        if (
            len(children) != 1
            or any(True for _ in module.parameters(recurse=False))
            or not _parameterized_children(children[0][1])  # a single layer: keep its parent
        ):
            return name, module
        child_name, module = children[0]
        name = _join(name, child_name)


def _sibling_runs(prefix: str, parent: nn.Module) -> list[list[Layer]]:
    """Parameterised layers under ``parent`` in definition order, as runs that share a parent.

    ``Sequential`` / ``ModuleList`` / ``ModuleDict`` children are opened (recursively); any
    other module (a conv, a residual block) is one layer.
    """
    runs: list[list[Layer]] = [[]]
    for child_name, child in _parameterized_children(parent):
        name = _join(prefix, child_name)
        if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            runs.extend(_sibling_runs(name, child))
            runs.append([])
        else:
            runs[-1].append((name, child))
    return [run for run in runs if run]


def _same_width_runs(layers: list[Layer]) -> list[list[Layer]]:
    runs: list[list[Layer]] = []
    for layer in layers:
        if runs and _output_width(runs[-1][-1][1]) == _output_width(layer[1]):
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return runs


def _output_width(module: nn.Module) -> int:
    last = list(module.parameters())[-1]
    return last.shape[0] if last.dim() else 1


def _parameterized_children(module: nn.Module) -> list[Layer]:
    return [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
