"""The course device: ``$SALIENCYLAB_DEVICE`` puts models and images on a GPU, and every lesson
runs end to end there with its assertions (skipped where torch sees no CUDA GPU)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from saliencylab import SaliencyLabError
from saliencylab.attribution import gradcam, saliency, smoothgrad
from saliencylab.digits import load_digits_images
from saliencylab.images import sample_image, to_tensor
from saliencylab.models import course_device, load_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import nbtools  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("value, expected", [(None, "cpu"), ("", "cpu"), ("cpu", "cpu"), (" CPU ", "cpu")])
def test_course_device_is_the_cpu_unless_asked(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("SALIENCYLAB_DEVICE", raising=False)
    else:
        monkeypatch.setenv("SALIENCYLAB_DEVICE", value)
    assert course_device() == torch.device(expected)


def test_auto_takes_cuda_only_where_there_is_one(monkeypatch):
    monkeypatch.setenv("SALIENCYLAB_DEVICE", "auto")
    assert course_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_device_that_is_not_there_or_not_a_device_says_what_to_do(monkeypatch):
    monkeypatch.setenv("SALIENCYLAB_DEVICE", "gpu0")
    with pytest.raises(SaliencyLabError, match="not a device: use cpu, cuda"):
        course_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("SALIENCYLAB_DEVICE", "cuda")
        with pytest.raises(SaliencyLabError, match="sees no CUDA GPU.*auto"):
            load_model("digits_cnn")


def test_explicit_devices_win_over_the_course_device(monkeypatch):
    monkeypatch.setenv("SALIENCYLAB_DEVICE", "cpu")
    images, labels = load_digits_images("test", device="cpu")
    assert images.device.type == labels.device.type == "cpu"
    assert to_tensor(torch.rand(3, 40, 50), 32).device.type == "cpu"  # a tensor keeps its device


@needs_cuda
def test_models_images_and_maps_go_to_the_gpu_and_agree_with_the_cpu(monkeypatch):
    monkeypatch.setenv("SALIENCYLAB_DEVICE", "cuda")
    model = load_model("efficientnet_lite0")
    image = to_tensor(sample_image("chelsea"), 224)
    digit_images, digit_labels = load_digits_images("test")
    assert next(model.parameters()).is_cuda and image.is_cuda and digit_images.is_cuda and digit_labels.is_cuda
    cat = 285
    on_gpu = {"saliency": saliency(model, image, cat), "gradcam": gradcam(model, image, cat)}
    monkeypatch.setenv("SALIENCYLAB_DEVICE", "cpu")
    cpu_model, cpu_image = load_model("efficientnet_lite0"), image.cpu()
    on_cpu = {"saliency": saliency(cpu_model, cpu_image, cat), "gradcam": gradcam(cpu_model, cpu_image, cat)}
    for name, gpu_map in on_gpu.items():
        assert gpu_map.is_cuda, name
        # TF32 and other kernels: close, not equal.
        correlation = torch.corrcoef(torch.stack([gpu_map.cpu().flatten(), on_cpu[name].flatten()]))[0, 1]
        assert correlation > 0.99, (name, correlation.item())


@needs_cuda
def test_a_seed_or_a_cpu_generator_gives_the_same_smoothgrad_noise_on_the_gpu(digits_cnn):
    images = load_digits_images("test", device="cpu")[0][:3]
    on_cpu = smoothgrad(digits_cnn, images, 4, samples=6, seed=3)
    gpu_model = digits_cnn.to("cuda")
    try:
        with_seed = smoothgrad(gpu_model, images.cuda(), 4, samples=6, seed=3)
        with_generator = smoothgrad(gpu_model, images.cuda(), 4, samples=6,
                                    generator=torch.Generator().manual_seed(3))
    finally:
        digits_cnn.to("cpu")  # a session-wide fixture
    assert torch.allclose(with_seed.cpu(), on_cpu, rtol=1e-3, atol=1e-5)
    assert torch.equal(with_seed, with_generator)


@needs_cuda
@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", nbtools.solution_notebooks(), ids=lambda path: path.stem)
def test_every_lesson_runs_on_the_gpu_with_its_assertions(notebook, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    executed = nbformat.read(str(notebook), as_version=4)
    os.environ["SALIENCYLAB_DEVICE"] = "cuda"  # inherited by the kernel
    try:
        NotebookClient(executed, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    finally:
        del os.environ["SALIENCYLAB_DEVICE"]
    errors = [output for cell in executed.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors  # nbclient raises on the first unexpected error; raises-exception cells too
