"""The registries: adding a loss, an exit criterion or a schedule is one definition; unknown names list the known."""
import pytest
import torch

from reskd.adaptive import CRITERIA, confidence, criterion_range, register_criterion
from reskd.registry import Registry
from reskd.reskd import RESIDUAL_LOSSES, residual_loss
from reskd.train import SCHEDULES, TrainConfig


def test_a_registry_keeps_order_descriptions_and_names_unknown_entries():
    things = Registry("thing")
    things.register("b", "the second letter")(2)
    things.register("a")(1)
    assert list(things) == ["b", "a"] and things["a"] == 1 and "b" in things and len(things) == 2
    assert things.descriptions() == {"b": "the second letter", "a": ""}
    with pytest.raises(ValueError, match=r"unknown thing 'c'; choose one of b, a\."):
        things["c"]
    with pytest.raises(ValueError, match="already registered"):
        things.register("a")(3)
    assert things.check("auto", extra=("auto",)) == "auto"
    with pytest.raises(ValueError, match=r"choose one of 'auto', b, a"):
        things.check("c", extra=("auto",))


def test_the_built_in_entries_in_their_documented_order():
    assert list(RESIDUAL_LOSSES) == ["mse", "mse_centered", "logprob", "kd", "mse+ce"]
    assert all(RESIDUAL_LOSSES.description(name) for name in RESIDUAL_LOSSES)
    assert list(CRITERIA) == ["max_prob", "margin", "neg_entropy", "gate"]
    assert list(SCHEDULES) == ["cosine", "multistep", "onecycle", "constant", "wsd"]


def test_registering_a_residual_loss_is_one_definition(monkeypatch):
    monkeypatch.setattr(RESIDUAL_LOSSES, "_items", dict(RESIDUAL_LOSSES._items))
    monkeypatch.setattr(RESIDUAL_LOSSES, "_descriptions", dict(RESIDUAL_LOSSES._descriptions))

    @RESIDUAL_LOSSES.register("l1", "mean absolute error between s and r")
    def l1(s, previous, teacher, y, **_):
        return {"l1": (s - (teacher - previous)).abs().mean()}

    s, previous, teacher = torch.ones(2, 3), torch.zeros(2, 3), torch.full((2, 3), 3.0)
    assert residual_loss("l1", s, previous, teacher, torch.zeros(2, dtype=torch.long))["l1"].item() == 2.0
    with pytest.raises(ValueError, match="unknown residual loss 'l2'; choose one of mse, .*, l1"):
        residual_loss("l2", s, previous, teacher, torch.zeros(2, dtype=torch.long))


def test_registering_an_exit_criterion_is_one_definition(monkeypatch):
    monkeypatch.setattr(CRITERIA, "_items", dict(CRITERIA._items))
    monkeypatch.setattr(CRITERIA, "_descriptions", dict(CRITERIA._descriptions))

    @register_criterion("min_prob", "the smallest softmax probability", range=lambda c: (0.0, 1.0 / c))
    def min_prob(p):
        return p.min(1).values

    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert confidence(logits, "min_prob").tolist() == pytest.approx([0.5, 4.54e-5], rel=1e-2)
    assert criterion_range("min_prob", 4) == (0.0, 0.25)
    with pytest.raises(ValueError, match="unknown criterion 'entropy'; choose one of max_prob"):
        confidence(logits, "entropy")


def test_unknown_schedule_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown schedule 'linear'; choose one of cosine, multistep, onecycle"):
        TrainConfig(schedule="linear")
