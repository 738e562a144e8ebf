"""Grad-CAM: the target layer of each registry model, maps that point at the evidence, fast on CPU."""
import matplotlib

matplotlib.use("Agg")

import copy  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from bloodlib import plots  # noqa: E402
from bloodlib.evaluation import explain  # noqa: E402
from bloodlib import models as models_  # noqa: E402  (the fixture is `models`)
from conftest import check_figure  # noqa: E402

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "alexnet":
        return torchvision.models.alexnet(weights=None, num_classes=4)
    return timm.create_model(name, pretrained=False, num_classes=4)


@pytest.fixture(scope="module")
def models():
    return {name: _build(name) for name in ("resnet18", "resnet50", "efficientnet_b0", "alexnet")}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _images(n=8, size=64, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def test_target_layer_is_the_usual_choice_for_every_registry_model(models):
    assert explain.target_layer(models["resnet18"]) is models["resnet18"].layer4[-1]
    assert explain.target_layer(models["resnet50"]) is models["resnet50"].layer4[-1]
    assert explain.target_layer(models["efficientnet_b0"]) is models["efficientnet_b0"].conv_head
    assert explain.target_layer(models["alexnet"]) is models["alexnet"].features[10]  # the last conv, features[-3]
    wrapped = nn.Sequential(nn.Identity(), models["resnet18"])  # e.g. normalisation inside the model
    assert explain.target_layer(wrapped) is models["resnet18"].layer4[-1]
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        explain.target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "efficientnet_b0", "alexnet"])
def test_overlays_of_every_registry_model(models, name):
    model = models[name].train()
    images = _images(8, 64)
    maps, _ = explain.gradcam(model, images, normalize=explain.normalizer(), device="cpu")
    overlays = explain.overlay(images, maps)
    assert overlays.shape == (8, 64, 64, 3) and overlays.dtype == np.uint8
    assert overlays.std() > 0
    assert model.training  # the caller's mode is restored


def test_inplace_activations_do_not_change_the_maps(models):
    model = models["alexnet"]  # ReLU(inplace=True) right after its target conv
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if getattr(module, "inplace", None) is True:
            module.inplace = False
    images = _images(4, 64)
    maps, _ = explain.gradcam(model, images, targets=[0, 1, 2, 3])
    reference, _ = explain.gradcam(plain, images, targets=[0, 1, 2, 3])
    np.testing.assert_allclose(maps, reference, atol=1e-5)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # switched back on


def test_map_points_at_the_evidence():
    # The class-0 logit is the mean brightness of the image: the map must light up where the image is bright.
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[0].bias.zero_()
        model[3].weight.copy_(torch.tensor([[1.0], [-1.0]])), model[3].bias.zero_()
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 4:12, 20:28] = 255
    maps, probs = explain.gradcam(model, images, normalize=lambda x: x.float() / 255, targets=[0])
    row, col = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert 4 <= row < 12 and 20 <= col < 28
    assert maps[0][images[0, 0].numpy() == 0].max() < 0.05
    assert probs.shape == (1, 2) and probs[0].sum() == pytest.approx(1)


def test_frozen_model_and_mean_std_pair(models):
    model = copy.deepcopy(models["resnet18"]).requires_grad_(False)
    maps, _ = explain.gradcam(model, _images(2, 64), normalize=(models_.IMAGENET_MEAN, models_.IMAGENET_STD))
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="uint8 N x 3 x H x W"):
        explain.gradcam(model, torch.zeros(2, 3, 64, 64))


def test_gradcam_figure_titles_true_and_predicted(models):
    labels = np.array([0, 1, 2, 3, 0, 1])
    positions = explain.samples_per_class(labels, per_class=1, seed=0)
    assert sorted(labels[positions]) == [0, 1, 2, 3]
    fig = plots.gradcam_figure(models["resnet18"], _images(4, 64), labels[:4], CLASSES, ncols=2)
    check_figure(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert len(titles) == 4 and titles[0].startswith("EOSINOPHIL /") and titles[0].endswith(")")
