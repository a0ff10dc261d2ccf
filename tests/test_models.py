"""Tests for reskd.models: every registered network builds, runs, and has the documented structure."""

import math

import pytest
import torch
import torchvision
from torch import nn

from reskd import models
from reskd.flops import count_macs
from reskd.models import (
    IMAGENET_RESNET_LAYERS,
    StagedClassifier,
    cifar_resnet,
    create_model,
    imagenet_resnet,
    list_models,
    register_model,
    wide_resnet,
)

IMAGENET_NAMES = [f"resnet{depth}" for depth in IMAGENET_RESNET_LAYERS]
CIFAR_NAMES = [name for name in list_models() if name not in IMAGENET_NAMES]
SMALL_WIDTH = 0.25  # keeps every forward pass in the tests cheap
BATCH = 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_params(c_in: int, c_out: int, kernel: int) -> int:
    return c_in * c_out * kernel * kernel  # convs have no bias in these networks


def bn_params(channels: int) -> int:
    return 2 * channels  # weight and bias


def cifar_resnet_params(depth: int, num_classes: int, shortcut_convs: bool = True) -> int:
    """Parameters of a CIFAR ResNet by formula (He et al. sec. 4.2); option A shortcuts have none."""
    n = (depth - 2) // 6
    total = conv_params(3, 16, 3) + bn_params(16)
    c_in = 16
    for c_out in (16, 32, 64):
        for _ in range(n):
            total += conv_params(c_in, c_out, 3) + bn_params(c_out) + conv_params(c_out, c_out, 3) + bn_params(c_out)
            if c_in != c_out and shortcut_convs:
                total += conv_params(c_in, c_out, 1) + bn_params(c_out)
            c_in = c_out
    return total + c_in * num_classes + num_classes


def wrn_params(depth: int, k: int, num_classes: int) -> int:
    """Parameters of WRN-depth-k by formula (pre-activation blocks, bias-free 1x1 shortcut convs)."""
    n = (depth - 4) // 6
    total = conv_params(3, 16, 3)
    c_in = 16
    for c_out in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += bn_params(c_in) + conv_params(c_in, c_out, 3) + bn_params(c_out) + conv_params(c_out, c_out, 3)
            if c_in != c_out:
                total += conv_params(c_in, c_out, 1)
            c_in = c_out
    return total + bn_params(c_in) + c_in * num_classes + num_classes


def check_outputs(model: nn.Module, image_size: int, num_classes: int, feature_sizes: list[int]) -> None:
    """Logits shape, one feature map per stage with the announced channels/size, and head(features) == logits."""
    model.eval()
    x = torch.randn(BATCH, 3, image_size, image_size)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        head_logits = model.head(features[-1])
    assert logits.shape == (BATCH, num_classes)
    assert [f.shape for f in features] == [
        (BATCH, c, s, s) for c, s in zip(model.feature_channels, feature_sizes, strict=True)
    ]
    torch.testing.assert_close(head_logits, logits)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_runs_on_32x32(name, num_classes):
    model = create_model(name, num_classes, width=SMALL_WIDTH)
    assert isinstance(model, StagedClassifier)
    assert model.num_classes == num_classes
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == num_classes
    assert model.fc.in_features == model.feature_channels[-1]
    if name in CIFAR_NAMES:
        check_outputs(model, 32, num_classes, feature_sizes=[32, 16, 8])
    else:  # the standard ImageNet stem also runs on 32x32: /4 in the stem, then /2 per stage
        check_outputs(model, 32, num_classes, feature_sizes=[8, 4, 2, 1])


@pytest.mark.parametrize("name", IMAGENET_NAMES)
def test_imagenet_resnets_small_input_64_and_standard_224(name):
    check_outputs(create_model(name, 200, width=SMALL_WIDTH, small_input=True), 64, 200, [64, 32, 16, 8])
    check_outputs(create_model(name, 10, width=SMALL_WIDTH), 224, 10, [56, 28, 14, 7])


def test_the_64px_stem_halves_a_64x64_image_once_and_costs_a_quarter_of_the_stride_1_stem():
    model = create_model("resnet18", 200, width=SMALL_WIDTH, stem="64px")
    check_outputs(model, 64, 200, [32, 16, 8, 4])
    small = create_model("resnet18", 200, width=SMALL_WIDTH, small_input=True)
    assert n_params(model) == n_params(small) and model.stem_name == "64px" and small.stem_name == "small"
    macs, small_macs = count_macs(model, (3, 64, 64)), count_macs(small, (3, 64, 64))
    assert 3.5 < small_macs / macs < 4.5  # every map has a quarter of the pixels (the fc layer aside)
    with pytest.raises(ValueError, match="unknown stem 'big'; choose one of imagenet, small, 64px"):
        create_model("resnet18", 200, stem="big")


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "resnet18"])
def test_features_and_logits_backpropagate(name):
    """Distillation losses use intermediate features and logits together; in-place ops must not break autograd."""
    model = create_model(name, 10, width=SMALL_WIDTH).train()
    features = model.forward_features(torch.randn(BATCH, 3, 32, 32))
    loss = sum(f.square().mean() for f in features) + model.head(features[-1]).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet20_parameter_count():
    # Option A (parameter-free shortcuts) is the well-known 0.27M = 269,722 of He et al.'s ResNet-20;
    # our 1x1-conv + BN shortcuts add 16*32 + 2*32 + 32*64 + 2*64 = 2,752 parameters.
    assert cifar_resnet_params(20, 10, shortcut_convs=False) == 269_722
    assert n_params(create_model("resnet20", 10)) == cifar_resnet_params(20, 10) == 269_722 + 2_752


@pytest.mark.parametrize("depth", [8, 56, 110])
def test_cifar_resnet_parameter_count_matches_formula(depth):
    assert n_params(create_model(f"resnet{depth}", 100)) == cifar_resnet_params(depth, 100)


def test_wrn_parameter_counts():
    wrn_16_2 = n_params(create_model("wrn_16_2", 10))
    assert wrn_16_2 == wrn_params(16, 2, 10)
    assert math.isclose(wrn_16_2, 0.69e6, rel_tol=0.01)  # CRD's table: WRN-16-2 0.69M
    assert n_params(create_model("wrn_40_2", 100)) == wrn_params(40, 2, 100)


@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_resnet_matches_torchvision_parameter_count(depth):
    ours = imagenet_resnet(depth, 1000)
    reference = getattr(torchvision.models, f"resnet{depth}")(num_classes=1000)
    assert n_params(ours) == n_params(reference)
    # the small-input stem swaps the 7x7 conv for a 3x3 one and changes nothing else
    stem_channels = 64
    assert n_params(ours) - n_params(imagenet_resnet(depth, 1000, small_input=True)) == 3 * stem_channels * (49 - 9)


def test_width_multiplier_scales_every_stage():
    assert create_model("resnet20", 10).feature_channels == [16, 32, 64]
    assert create_model("resnet20", 10, width=2).feature_channels == [32, 64, 128]
    assert create_model("resnet20", 10, width=0.5).stem.conv.out_channels == 8
    assert create_model("resnet20", 10, width=0.1).feature_channels == [2, 3, 6]  # rounded
    assert create_model("resnet20", 10, width=0.001).feature_channels == [1, 1, 1]  # at least one channel
    assert create_model("wrn_16_2", 10, width=0.5).feature_channels == [16, 32, 64]
    assert create_model("resnet50", 10, width=0.5).feature_channels == [128, 256, 512, 1024]
    # parameters of a conv net scale roughly with width squared
    ratio = n_params(create_model("resnet56", 10, width=0.5)) / n_params(create_model("resnet56", 10))
    assert 0.24 < ratio < 0.27


def test_any_valid_depth_builds():
    assert cifar_resnet(26, 10).feature_channels == [16, 32, 64]
    assert len(cifar_resnet(26, 10).layer1) == 4
    wrn = create_model("wrn_10_3", 10)  # not registered: parsed from the name
    assert wrn.feature_channels == [48, 96, 192] and len(wrn.layer2) == 1
    assert wide_resnet(22, 1, 10, dropout=0.3).layer1[0].dropout.p == 0.3


def test_initialisation_follows_torchvision():
    model = create_model("resnet20", 10)
    conv = model.layer3[1].conv2  # 64 -> 64, 3x3: fan-out 576, 36,864 weights
    expected_std = math.sqrt(2.0 / (conv.out_channels * 9))  # Kaiming normal, fan-out, ReLU gain
    assert math.isclose(conv.weight.std().item(), expected_std, rel_tol=0.05)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet20.*wrn_40_2"):
        create_model("resnet19", 10)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_model("resnet8", num_classes)


@pytest.mark.parametrize("width", [0, -1, float("nan"), float("inf"), "1"])
def test_bad_width(width):
    with pytest.raises(ValueError, match="width must be a positive finite number"):
        create_model("resnet8", 10, width=width)


def test_bad_depths_and_options():
    with pytest.raises(ValueError, match=r"6n \+ 2.*resnet18"):
        cifar_resnet(18, 10)
    with pytest.raises(ValueError, match=r"6n \+ 4"):
        create_model("wrn_15_2", 10)
    with pytest.raises(ValueError, match="widen_factor"):
        create_model("wrn_16_0", 10)
    with pytest.raises(ValueError, match="dropout"):
        create_model("wrn_16_2", 10, dropout=1.5)
    with pytest.raises(ValueError, match=r"choose one of \[18, 34, 50, 101\]"):
        imagenet_resnet(19, 10)
    with pytest.raises(TypeError, match="small_input"):
        create_model("resnet20", 10, small_input=True)  # a CIFAR ResNet always has the small stem


def test_register_model(monkeypatch):
    monkeypatch.setattr(models, "_MODELS", dict(models._MODELS))  # keep the global registry clean

    @register_model("tiny_resnet")
    def tiny_resnet(num_classes, *, width=1.0):
        return cifar_resnet(8, num_classes, width)

    assert "tiny_resnet" in list_models()
    assert create_model("tiny_resnet", 7).num_classes == 7
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20")(tiny_resnet)


def test_pretrained_resnet_loads_torchvision_weights(monkeypatch):
    """torchvision's ImageNet weights (here a fresh torchvision resnet18's, served in place of the download) land in
    our layout: the same outputs as torchvision's model."""
    reference = torchvision.models.resnet18().eval()
    urls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda url, **kw: urls.append(url) or reference.state_dict())
    model = models.create_model("resnet18", 1000, pretrained=True).eval()
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_pretrained_weights_offline_say_what_to_do(monkeypatch):
    import urllib.error

    def offline(url, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(models.PretrainedWeightsError) as error:
        models.create_model("resnet34", 1000, pretrained=True)
    message = str(error.value)
    assert "\n" not in message and "offline" in message and "resnet34-b627a593.pth" in message
    assert "Connect to the internet" in message and "drop pretrained=True" in message


def test_pretrained_weights_need_the_torchvision_shape():
    with pytest.raises(models.PretrainedWeightsError, match="fit resnet18 at width 1.0"):
        models.create_model("resnet18", 200, width=0.5, pretrained=True)


def test_pretrained_weights_refuse_another_stem_and_name_it():
    with pytest.raises(models.PretrainedWeightsError, match="stem='64px'"):
        models.create_model("resnet18", 1000, stem="64px", pretrained=True)
