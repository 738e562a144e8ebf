"""The model registry: every name builds, weights are looked for quickly offline, sizes are counted."""
from __future__ import annotations

import socket
import threading
import warnings

import huggingface_hub.constants
import pytest
import torch
from torch import nn

from bloodlib import config, models
from bloodlib.models import PretrainedUnavailableError, checkpoints, create_model, factory, registry
from bloodlib.utils import paths


@pytest.fixture
def empty_weight_caches(tmp_path, monkeypatch):
    """No cached ImageNet weights: an empty Hugging Face cache and an empty torch.hub folder."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield
    torch.hub.set_dir(old)


@pytest.fixture
def offline(monkeypatch, empty_weight_caches) -> list:
    """As on a machine without network: no weights host answers, and every connection attempt is refused
    and recorded (the list returned)."""
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError(f"offline: no connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(factory, "_host_answers", lambda url, timeout=factory.PROBE_TIMEOUT: False)
    return attempts


@pytest.mark.parametrize("name", models.list_models())
def test_each_model_builds_and_gives_logits(name):
    spec = models.get_spec(name)
    model = create_model(name, num_classes=4, pretrained="scratch").eval()
    assert (model.model_name, model.pretrained_source, model.min_size) == (name, "scratch", spec.min_size)
    assert len(model.normalization["mean"]) == len(model.normalization["std"]) == 3
    with torch.no_grad():
        for size in [(spec.min_size, spec.min_size), (48, 64)]:  # the smallest it takes, the smoke profile's
            assert model(torch.zeros(2, 3, *size)).shape == (2, 4)


def test_alexnet_runs_below_its_native_63_px_and_keeps_torchvision_weights_layout():
    from torchvision.models import alexnet

    model = create_model("alexnet", 4, pretrained="scratch")
    assert model.enlarge(torch.zeros(1, 3, 48, 64)).shape[-2:] == (63, 84)  # short side to 63, shape kept
    assert model.enlarge(torch.zeros(1, 3, 80, 80)).shape[-2:] == (80, 80)  # large enough: untouched
    reference = alexnet(num_classes=4).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.items()}


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'vgg16'.*alexnet.*resnet18"):
        create_model("vgg16", 4)


def test_input_size_check_names_model_and_size(monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "resnet18", models.ModelSpec(registry._timm_builder("resnet18"), 32, ""))
    with pytest.raises(ValueError, match=r"'resnet18' needs inputs of at least 32 px, got 16x21"):
        models.check_input_size("resnet18", (16, 21))
    models.check_input_size("resnet18", 32)


def test_pretrained_auto_offline_warns_and_trains_from_scratch(offline):
    for name in ("resnet18", "alexnet"):  # one timm (Hugging Face hub), one torchvision (torch.hub) model
        with pytest.warns(UserWarning, match=f"ImageNet weights for '{name}' are unavailable.*from scratch"):
            model = create_model(name, 4, pretrained="auto")
        assert model.pretrained_source == "scratch"
    assert offline == []  # the local caches only: no download was even tried (and so none can hang)


def test_the_offline_fallback_draws_the_same_weights_as_scratch(offline):
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="from scratch"):
        fallback = create_model("resnet18", 4, pretrained="auto").state_dict()
    torch.manual_seed(3)
    scratch = create_model("resnet18", 4, pretrained="scratch").state_dict()
    assert all(torch.equal(fallback[k], scratch[k]) for k in scratch)


def test_pretrained_imagenet_offline_raises_clearly(offline):
    with pytest.raises(PretrainedUnavailableError, match="'efficientnet_b0'.*not in the local cache.*cannot be reached"):
        create_model("efficientnet_b0", 4, pretrained="imagenet")


def test_the_groupnorm_resnet_has_no_batchnorm_and_no_imagenet_weights(monkeypatch):
    """Its normalisation keeps no batch statistics (nothing for AdaBN to re-estimate); ImageNet's weights are
    BatchNorm's, so asking for them fails at once, without looking in a cache or on the network."""
    model = create_model("resnet18_gn", 4, pretrained="scratch")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and not any("BatchNorm" in kind for kind in kinds)
    monkeypatch.setattr(factory, "build_model", lambda *a, **k: pytest.fail("weights were looked for"))
    monkeypatch.setattr(factory, "_host_answers", lambda *a, **k: pytest.fail("a host was probed"))
    with pytest.raises(PretrainedUnavailableError, match="'resnet18_gn' has no ImageNet weights"):
        create_model("resnet18_gn", 4, pretrained="imagenet")


def test_the_probe_answers_for_a_host_that_listens_and_not_for_one_that_does_not():
    """The real probe, on this machine only (127.0.0.1): a listening port answers, a closed one does not.
    (How long the offline fallback takes is measured by benchmarks/offline_weights.py, not asserted here.)"""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert factory._host_answers(f"http://127.0.0.1:{port}/weights")
    with socket.socket() as closed:  # bound, never listening: connections are refused at once
        closed.bind(("127.0.0.1", 0))
        assert not factory._host_answers(f"http://127.0.0.1:{closed.getsockname()[1]}/weights")


def test_probe_gives_up_on_a_hung_name_lookup(monkeypatch):
    """Name resolution cannot time out: the probe must return while the lookup still hangs."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hung_lookup(address, timeout=None):
        entered.set()
        release.wait(60)
        finished.set()
        raise OSError("name lookup released")

    monkeypatch.setattr(socket, "create_connection", hung_lookup)
    try:
        assert factory._host_answers("https://weights.invalid", timeout=0.05) is False
        assert entered.wait(10) and not finished.is_set()  # it returned before the lookup ended
    finally:
        release.set()


def test_pretrained_scratch_never_looks_for_weights(monkeypatch):
    def fail(*args):
        raise AssertionError("pretrained='scratch' looked for weights")
    monkeypatch.setattr(factory, "_imagenet", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert create_model("resnet18", 4, pretrained="scratch").pretrained_source == "scratch"


def test_pretrained_from_local_cache_is_recorded(monkeypatch):
    """When the builder finds weights (as from a local cache) the model says it is ImageNet-pretrained."""
    spec = models.REGISTRY["resnet18"]
    monkeypatch.setitem(models.REGISTRY, "resnet18", models.ModelSpec(
        lambda n, pretrained: spec.build(n, False), spec.min_size, spec.weights_host))
    model = create_model("resnet18", 4, pretrained="imagenet")
    assert (model.pretrained_source, model.initial_weights) == ("imagenet", {"kind": "imagenet"})


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="pretrained must be"):
        create_model("resnet18", 4, pretrained="")
    for old in (True, False):  # the strings say what they do: "imagenet", "scratch"
        with pytest.raises(ValueError, match="pretrained must be one of .*'scratch', 'imagenet', 'auto'"):
            create_model("resnet18", 4, pretrained=old)
    with pytest.raises(ValueError, match="pretrained='pbc': a backbone trained on a dataset is made by "
                                         "bloodlib.study.backbones.backbone"):
        create_model("resnet18", 4, pretrained="pbc")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet18", 1)


# ------------------------------------------------------------------------------- from a checkpoint

def _checkpoint(path, name="resnet18", classes=8, image_size=(32, 32), weights=True):
    """A best.pt as this study writes it: a model trained (here: just built) on another dataset's classes."""
    torch.manual_seed(1)
    source = create_model(name, classes, pretrained="scratch")
    metadata = dict(model=name, classes=[f"c{k}" for k in range(classes)], image_size=list(image_size), mode="crop",
                    dataset="pbc", data_checksum="ab" * 32, normalization={"mean": [0.5] * 3, "std": [0.2] * 3},
                    train_config={"epochs": 3, "lr": 1e-3}, backbone="0123456789abcdef",
                    test_metrics={"images": 10, "accuracy": 0.9, "macro_f1": 0.8})
    checkpoints.save_checkpoint(path, source if weights else None, metadata, kind="best" if weights else "last")
    return source


@pytest.mark.parametrize("name, head", [("resnet18", "fc"), ("alexnet", "classifier.6")])
def test_checkpoint_backbone_is_loaded_under_a_new_head(tmp_path, name, head):
    """timm's models (reset_classifier) and the AlexNet wrapper (its own head): backbone kept, head new."""
    source = _checkpoint(tmp_path / "best.pt", name, classes=8, image_size=(64, 64))
    model = create_model(name, 4, pretrained=tmp_path / "best.pt", image_size=64)
    kept, new = source.state_dict(), model.state_dict()
    backbone = [k for k in kept if not k.startswith(head + ".")]
    assert all(torch.equal(kept[k], new[k]) for k in backbone)
    assert new[f"{head}.weight"].shape == (4, kept[f"{head}.weight"].shape[1])  # 4 classes now, same features
    assert model.get_classifier() is dict(model.named_modules())[head]
    assert model.normalization == {"mean": [0.5] * 3, "std": [0.2] * 3}  # what the backbone learnt with
    assert model.pretrained_source == "pretrained on pbc"
    record = model.initial_weights
    assert record["kind"] == "checkpoint" and record["path"] == paths.portable((tmp_path / "best.pt").resolve(), config.project_root())
    assert (record["dataset"], record["data_checksum"], record["model"], record["image_size"], record["mode"]) == (
        "pbc", "ab" * 32, name, [64, 64], "crop")
    assert record["recipe"] == {"epochs": 3, "lr": 1e-3} and record["test_metrics"]["accuracy"] == 0.9
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 4)


def test_a_checkpoint_path_may_be_a_string(tmp_path):
    _checkpoint(tmp_path / "best.pt")
    assert create_model("resnet18", 4, pretrained=str(tmp_path / "best.pt"), image_size=32).pretrained_source == \
        "pretrained on pbc"


def test_checkpoints_that_cannot_start_this_model_are_refused(tmp_path):
    path = tmp_path / "best.pt"
    _checkpoint(path, "resnet18", image_size=(32, 32))
    with pytest.raises(checkpoints.CheckpointError,
                       match=f"{path} was made for model 'resnet18', expected 'efficientnet_b0'"):
        create_model("efficientnet_b0", 4, pretrained=path, image_size=32)
    with pytest.raises(checkpoints.CheckpointError, match=r"was made for image_size \[32, 32\], expected \[48, 48\]"):
        create_model("resnet18", 4, pretrained=path, image_size=48)
    with pytest.raises(ValueError, match="pass image_size"):
        create_model("resnet18", 4, pretrained=path)
    _checkpoint(tmp_path / "last.pt", weights=False)  # a finished run's record
    with pytest.raises(checkpoints.CheckpointError, match="last.pt holds no weights"):
        create_model("resnet18", 4, pretrained=tmp_path / "last.pt", image_size=32)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        create_model("resnet18", 4, pretrained=tmp_path / "missing.pt", image_size=32)


def test_count_parameters_and_flops():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 4))
    model[2].weight.requires_grad_(False)
    assert models.count_parameters(model) == 3 * 8 * 9 + 8 * 256 * 4 + 4
    assert models.count_parameters(model, trainable_only=True) == 3 * 8 * 9 + 4
    # a multiply-add counts 2: conv 2*8*27 per output pixel * 256 pixels, linear 2*2048*4
    assert models.count_flops(model.train(), 16) == 2 * 8 * 27 * 256 + 2 * 2048 * 4
    assert model.training  # mode restored
    resnet = create_model("resnet18", 1000, pretrained="scratch")
    assert 3.5e9 < models.count_flops(resnet, 224) < 3.7e9  # the usual 1.8 GMACs of ResNet-18
