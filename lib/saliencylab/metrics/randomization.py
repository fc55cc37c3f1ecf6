"""Sanity check by randomisation: the cascading model-parameter randomisation test.

Adebayo et al. 2018, "Sanity Checks for Saliency Maps": re-initialise the model from the logits
down; a map that explains the *model* must change, a map that only shows edges of the image
will not. Which layers form a step is decided in :mod:`saliencylab.metrics.layer_groups`; the
maps are compared with the statistics of :mod:`saliencylab.metrics.rank`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from saliencylab import _validate as validate
from saliencylab._core import SaliencyLabError, TargetLike, eval_mode, resolve_targets
from saliencylab.metrics import rank
from saliencylab.metrics.layer_groups import group_label, resolve_groups

__all__ = ["RandomizationResult", "randomization_test"]


@dataclass(frozen=True)
class RandomizationResult:
    """What :func:`randomization_test` measured; ``L`` steps, ``B`` images.

    Attributes:
        layers: a label per step, in the order randomised (top first by default).
        groups: the module names re-initialised at each step (pass back as ``layers=``).
        rank_correlation: ``[L, B]`` Spearman correlation of each step's map with the
            original map (NaN where a map became constant, e.g. an all-zero Grad-CAM, or
            contains NaN).
        ssim: ``[L, B]`` structural similarity of the min-max normalised maps (NaN where a
            map contains NaN), or ``None``.
        maps: ``[L + 1, B, ...]`` the maps; ``maps[0]`` is the original model's.
        targets: ``[B]`` the class explained at every step (the original model's).
        cascading: True when the randomisation accumulated from step to step.
        absolute: True when maps were compared by magnitude (``|map|``).
    """

    layers: list[str]
    groups: list[tuple[str, ...]]
    rank_correlation: torch.Tensor
    ssim: torch.Tensor | None
    maps: torch.Tensor
    targets: torch.Tensor
    cascading: bool
    absolute: bool

    def to_rows(self) -> list[dict[str, object]]:
        """One dict per (step, image): ``step, layer, image, target, rank_correlation, ssim``.

        ``pandas.DataFrame(result.to_rows())`` gives a table.
        """
        rows = []
        for step, layer in enumerate(self.layers):
            for image in range(self.rank_correlation.shape[1]):
                rows.append({
                    "step": step + 1,
                    "layer": layer,
                    "image": image,
                    "target": int(self.targets[image]),
                    "rank_correlation": float(self.rank_correlation[step, image]),
                    "ssim": None if self.ssim is None else float(self.ssim[step, image]),
                })
        return rows

    def __str__(self) -> str:
        width = max([len("randomised up to")] + [len(name) for name in self.layers])
        header = f"{'step':>4}  {'randomised up to' if self.cascading else 'randomised':<{width}}"
        header += "  spearman" + ("      ssim" if self.ssim is not None else "")
        lines = [header + "   (mean over images)"]
        for step, layer in enumerate(self.layers):
            line = f"{step + 1:>4}  {layer:<{width}}  {self.rank_correlation[step].mean():8.3f}"
            if self.ssim is not None:
                line += f"  {self.ssim[step].mean():8.3f}"
            lines.append(line)
        return "\n".join(lines)


def randomization_test(
    model: nn.Module,
    images: torch.Tensor,
    method: Callable[..., torch.Tensor],
    target: TargetLike = None,
    layers: Sequence[str | Sequence[str]] | None = None,
    seed: int = 0,
    absolute: bool = True,
    cascading: bool = True,
    ssim: bool = True,
    **method_options: object,
) -> RandomizationResult:
    """Cascading model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks").

    Re-initialises the model's layers one group at a time from the top (logits) down,
    cumulatively, recomputes the map after every step with ``method``, and compares it with
    the original map. A method that explains the model gives maps that decorrelate as more
    of the model becomes random; a method whose maps barely change is explaining the image
    (edges), not the model.

    The user's model is never modified: everything runs on a deep copy. The target class is
    resolved once on the original model and the same class is explained at every step (the
    randomised model's prediction is never used). Re-initialisation calls each module's
    ``reset_parameters()`` (PyTorch's default init; BatchNorm also resets its running
    statistics), else draws normal weights; it is seeded by ``seed``, and the method sees the
    same random numbers at every step (so SmoothGrad's noise is identical), without
    disturbing the global random state.

    Undefined comparisons are reported, not raised: a map that became constant on a
    randomised model (e.g. an all-zero Grad-CAM) has no ranking, so its rank correlation is
    NaN, with a warning that says so; a map that contains NaN on a randomised model (a method
    that divides by a map's maximum, say, once it is zero) gets NaN for both statistics, with
    a warning of its own. Only the original model's map must be free of NaN: with NaN there it
    raises a :class:`~saliencylab.SaliencyLabError`, as every metric does for NaN maps.

    Args:
        model: the classifier (left untouched).
        images: ``[B, 3, H, W]`` (or one ``[3, H, W]``) in ``[0, 1]``.
        method: ``method(model, images, target=targets, **method_options) -> [B, ...]``, e.g.
            ``saliencylab.attribution.saliency``.
        target: ``None`` (the original model's predictions), an int or one class per image.
        layers: the steps, in order: module names (``dict(model.named_modules())`` keys), or
            tuples of names randomised together. Default :func:`randomization_groups`.
        seed: seed of the re-initialisation (same seed, same result).
        absolute: compare ``|map|`` (default, as Adebayo et al. do for gradients).
        cascading: True: step k randomises groups 1..k; False: only group k ("independent").
        ssim: also compute SSIM (scikit-image) between min-max normalised maps.
        method_options: passed to ``method``. A module of ``model`` among them (Grad-CAM's
            ``layer=``) is replaced by the same module of the copy.
    Returns:
        a :class:`RandomizationResult`; ``print(result)`` shows a table, ``result.to_rows()``
        gives one row per step and image.
    """
    validate.nn_module(model)
    if not callable(method):
        raise SaliencyLabError(
            f"method must be callable as method(model, images, target=...), got {method!r}."
        )
    batch, _ = validate.image_batch(images)
    groups = resolve_groups(model, layers)
    with eval_mode(model, batch):
        targets = resolve_targets(model, batch, target)
    randomized, options = _private_copy(model, method_options)

    def attribute() -> torch.Tensor:
        """The method's maps ``[B, ...]`` on the model as randomised so far."""
        torch.manual_seed(seed)  # the method sees the same random numbers at every step
        return _checked_map(method(randomized, batch, target=targets, **options), batch)

    with torch.random.fork_rng(devices=_cuda_devices(model, batch)):
        maps = [_original_map(attribute())]
        pristine = None if cascading else copy.deepcopy(randomized.state_dict())
        for group, step_seed in zip(groups, _step_seeds(seed, len(groups))):
            if pristine is not None:
                randomized.load_state_dict(pristine)
            torch.manual_seed(step_seed)
            for name in group:
                _reinitialize(randomized.get_submodule(name))
            maps.append(attribute())

    stacked = torch.stack(maps)
    correlations = torch.stack([rank.spearman(stacked[0].flatten(1), m.flatten(1), absolute)
                                for m in stacked[1:]])
    _warn_about_undefined(stacked, correlations, absolute)
    similarity = None
    if ssim:
        similarity = torch.stack([rank.ssim(stacked[0], m, absolute) for m in stacked[1:]])
    return RandomizationResult(
        layers=[group_label(group) for group in groups],
        groups=groups,
        rank_correlation=correlations,
        ssim=similarity,
        maps=stacked,
        targets=targets,
        cascading=cascading,
        absolute=absolute,
    )


def _step_seeds(seed: int, steps: int) -> list[int]:
    """One seed per randomisation step, all drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2**62, (steps,), generator=generator).tolist()


def _original_map(maps: torch.Tensor) -> torch.Tensor:
    """The original model's maps ``[B, ...]``, which every step is compared with: no NaN."""
    has_nan = torch.isnan(maps).flatten(1).any(dim=1)
    if has_nan.any():
        raise SaliencyLabError(
            f"method returned maps that contain NaN on the original model (image(s) "
            f"{has_nan.nonzero().flatten().tolist()}), so there is nothing to compare the "
            "randomised maps with: fix the method (a division by zero in a normalisation, say)."
        )
    return maps


def _warn_about_undefined(maps: torch.Tensor, correlations: torch.Tensor, absolute: bool) -> None:
    """Say why a rank correlation is NaN: a step's map contains NaN, the original map is
    constant, or the step's map became constant. ``maps [L + 1, B, ...]``, ``correlations
    [L, B]``."""
    compared = maps.abs() if absolute else maps
    flat = compared.flatten(2)  # [L + 1, B, N]
    has_nan = torch.isnan(flat).any(dim=2)[1:]  # [L, B]
    constant = (flat.amax(dim=2) == flat.amin(dim=2))  # [L + 1, B]
    undefined = torch.isnan(correlations)
    with_nan = [(s + 1, i) for s, i in (undefined & has_nan).nonzero().tolist()]
    constant_original = (undefined.any(dim=0) & constant[0]).nonzero().flatten().tolist()
    became_constant = undefined & ~has_nan & ~constant[0]
    became = [(s + 1, i) for s, i in became_constant.nonzero().tolist()]
    if with_nan:
        warnings.warn(
            f"randomization_test: the map contains NaN at (step, image) {with_nan} (the method "
            "divided by zero, say, once the model was randomised): its rank correlation and "
            "SSIM are reported as NaN.",
            stacklevel=3,
        )
    if constant_original:
        warnings.warn(
            f"randomization_test: the original model's map of image(s) {constant_original} is "
            "constant: it has no ranking, so every rank correlation with it is undefined, "
            "reported as NaN.",
            stacklevel=3,
        )
    if became:
        warnings.warn(
            f"randomization_test: the map became constant (e.g. an all-zero Grad-CAM) at "
            f"(step, image) {became}: its rank correlation is undefined, reported as NaN.",
            stacklevel=3,
        )


def _private_copy(
    model: nn.Module, options: Mapping[str, object]
) -> tuple[nn.Module, dict[str, object]]:
    """A deep copy of ``model`` in eval mode, and ``options`` with its modules swapped for the
    copy's."""
    memo: dict[int, object] = {}
    try:
        duplicate = copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 - any failure means the same thing to the user
        raise SaliencyLabError(
            f"randomization_test works on a copy of the model, but copy.deepcopy(model) "
            f"failed ({type(error).__name__}: {error})."
        ) from error
    translated = {
        key: memo.get(id(value), value) if isinstance(value, nn.Module) else value
        for key, value in options.items()
    }
    return duplicate.eval(), translated


def _cuda_devices(model: nn.Module, images: torch.Tensor) -> list[int]:
    tensors = [images, *model.parameters()]
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _checked_map(maps: object, images: torch.Tensor) -> torch.Tensor:
    """The method's result as a detached ``[B, ...]`` float32 tensor."""
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2 or maps.shape[0] != images.shape[0]:
        shape = list(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise SaliencyLabError(
            f"method must return a tensor [B, ...] with one map per image (B = "
            f"{images.shape[0]}), got {shape}."
        )
    return maps.detach().float()


def _reinitialize(module: nn.Module) -> None:
    """Re-draw every parameter of ``module``: ``reset_parameters()`` where a layer has one."""
    for layer in module.modules():
        own = list(layer.parameters(recurse=False))
        if not own:
            continue
        if callable(getattr(layer, "reset_parameters", None)):
            layer.reset_parameters()
            continue
        with torch.no_grad():
            for parameter in own:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                parameter.normal_(0.0, 1.0 / math.sqrt(fan_in) if parameter.dim() > 1 else 0.01)
