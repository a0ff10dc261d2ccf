"""Tests for reskd.flops: MACs match published values, torch's own FLOP counter and simple scaling laws."""

import dataclasses
import logging
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reskd.flops import ModelCost, cost_table, count_macs, count_params, model_cost
from reskd.models import create_model

FLOPS_PER_MAC = 2


def torch_flops(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """FLOPs of conv/linear/matmul ops as counted by PyTorch (2 per multiply-add)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, *input_size))
    return counter.get_total_flops()


@pytest.mark.parametrize(("name", "mmacs"), [("resnet20", 40.81), ("resnet32", 69.12), ("resnet56", 125.75)])
def test_known_cifar_resnet_macs(name, mmacs):
    assert math.isclose(count_macs(create_model(name, 10)), mmacs * 1e6, rel_tol=0.01)


def test_conv_linear_model_by_hand_and_against_torch():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 32x32 out: 8*32*32 outputs of 3*3*3 MACs
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 16x16 out: 16*16*16 outputs of 8*3*3 MACs
        nn.Flatten(),
        nn.Linear(16 * 16 * 16, 10),  # 10 outputs of 4096 MACs
    )
    expected = 8 * 32 * 32 * 27 + 16 * 16 * 16 * 72 + 10 * 4096
    assert count_macs(model) == expected
    assert FLOPS_PER_MAC * count_macs(model) == torch_flops(model, (3, 32, 32))


@pytest.mark.parametrize(
    ("name", "kwargs", "input_size"),
    [
        ("resnet20", {}, (3, 32, 32)),
        ("wrn_16_2", {"width": 0.5}, (3, 32, 32)),
        ("resnet18", {"width": 0.25, "small_input": True}, (3, 64, 64)),
    ],
)
def test_networks_agree_with_torch_flop_counter(name, kwargs, input_size):
    """Neither counter counts BatchNorm, pooling, activations or additions, so they agree exactly."""
    model = create_model(name, 10, **kwargs)
    assert FLOPS_PER_MAC * count_macs(model, input_size) == torch_flops(model, input_size)


def test_half_width_roughly_quarters_macs():
    ratio = count_macs(create_model("resnet20", 10, width=0.5)) / count_macs(create_model("resnet20", 10))
    assert abs(ratio - 0.25) < 0.01  # the 3-channel stem input and the fc keep it slightly above 1/4


# sides divisible by the network's total stride (8 with the small stem, 32 with the standard one), so that
# no feature map is rounded up
@pytest.mark.parametrize(("small_input", "sizes"), [(True, (32, 64)), (False, (128, 256))])
def test_macs_scale_with_image_area(small_input, sizes):
    model = create_model("resnet18", 10, width=0.25, small_input=small_input)
    small, large = (count_macs(model, (3, s, s)) for s in sizes)
    assert math.isclose(large / small, 4.0, rel_tol=0.01)  # twice the side: four times the convolutions


def test_training_mode_is_restored_and_nothing_is_logged(caplog):
    model = create_model("resnet8", 10).train()
    with caplog.at_level(logging.WARNING):
        count_macs(model)
    assert model.training and all(m.training for m in model.modules())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    model.eval()
    count_macs(model, device="cpu")
    assert not any(m.training for m in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_counts_on_the_models_device():
    model = create_model("resnet8", 10)
    on_cpu = count_macs(model)
    assert count_macs(model.cuda()) == on_cpu


@pytest.mark.parametrize("input_size", [(32, 32), (3, 0, 32), (3, 32.0, 32), (1, 3, 32, 32)])
def test_bad_input_size(input_size):
    with pytest.raises(ValueError, match=r"input_size must be \(channels, height, width\)"):
        count_macs(nn.Linear(2, 2), input_size)


def test_count_params():
    assert count_params(nn.Linear(4, 3)) == 4 * 3 + 3
    shared = nn.Linear(4, 4)
    assert count_params(nn.Sequential(shared, shared)) == 4 * 4 + 4  # shared weights counted once


def test_model_cost():
    cost = model_cost(create_model("resnet20", 10))
    assert cost == ModelCost(macs=40_813_184, params=272_474)  # see test_models for the parameter formula
    assert math.isclose(cost.mmacs, 40.813184) and math.isclose(cost.gmacs, 0.040813184)
    assert math.isclose(cost.mparams, 0.272474)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.macs = 0


def test_cost_table():
    nets = {"teacher": create_model("resnet32", 10), "student": create_model("resnet8", 10)}
    table = cost_table(nets, (3, 32, 32), reference="teacher")
    assert list(table.columns) == ["name", "params", "MACs", "% of reference MACs"]
    assert list(table["name"]) == ["teacher", "student"]
    assert list(table["MACs"]) == [count_macs(nets["teacher"]), count_macs(nets["student"])]
    teacher_pct, student_pct = table["% of reference MACs"]
    assert teacher_pct == 100.0
    assert math.isclose(student_pct, 100 * table["MACs"][1] / table["MACs"][0])
    assert "% of reference MACs" not in cost_table(nets).columns
    with pytest.raises(ValueError, match="reference 'resnet110' is not one of the models"):
        cost_table(nets, reference="resnet110")
