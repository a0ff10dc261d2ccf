"""Precision: fp32 or bf16 autocast, "auto" resolved per machine, part of a run's key only when not fp32."""
import pytest
import torch

from reskd import precision as P
from reskd.cache import OutputCache
from reskd.runstore import run_key
from reskd.train import TrainConfig, fit
from reskd.distill import CE
from reskd.data import Loader

from helpers import TinyNet, tiny_images, tiny_spec


def test_fp32_configs_keep_their_keys_and_bf16_is_a_different_run():
    fp32, bf16 = TrainConfig(), TrainConfig(precision="bf16")
    assert "precision" not in fp32.to_dict()  # the keys of every run trained before precision existed
    assert bf16.to_dict()["precision"] == "bf16"
    assert TrainConfig.from_dict(bf16.to_dict()) == bf16 and TrainConfig.from_dict(fp32.to_dict()) == fp32
    assert run_key({"train": fp32.to_dict()}) != run_key({"train": bf16.to_dict()})


def test_auto_is_resolved_by_the_machine_and_names_what_ran(monkeypatch):
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert P.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "fma"})
    assert P.resolve_precision("auto", "cpu") == "fp32"  # no bf16 units: no emulated (slower) bf16
    assert TrainConfig(precision="auto").precision in P.PRECISIONS  # a config never holds "auto"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        TrainConfig(precision="fp16")


def test_bf16_autocast_runs_convolutions_in_bf16_and_fp32_can_be_forced_back():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    with P.autocast("bf16", "cpu"):
        assert conv(x).dtype == torch.bfloat16
        with P.autocast("fp32", "cpu", force=True):
            assert conv(x).dtype == torch.float32
        with P.autocast("fp32", "cpu"):  # without force, the enclosing autocast holds
            assert conv(x).dtype == torch.bfloat16


def test_the_output_cache_stores_each_precision_apart_and_computes_in_its_own(tmp_path):
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(4, 3, 8, 8)
    fp32, bf16 = OutputCache(model, tmp_path, name="t"), OutputCache(model, tmp_path, name="t", precision="bf16")
    assert bf16.model_key == fp32.model_key + "-bf16"  # fp32 keeps the key it always had
    with P.autocast("bf16", "cpu"):  # inside a bf16 training step, the fp32 cache still computes in fp32
        out = fp32(x, torch.arange(4), "view", 4)
    with torch.no_grad():
        expected = model(x).to(torch.float16).float()
    assert torch.equal(out, expected)


def test_a_bf16_run_trains_and_records_its_precision(tmp_path):
    torch.manual_seed(0)
    loader = Loader(tiny_images(64), tiny_spec(), 16, train=True, seed=0)
    result = fit(CE(TinyNet()), loader, TrainConfig(epochs=1, batch_size=16, lr=0.05, precision="bf16"),
                 run_dir=tmp_path / "run", device="cpu", progress=False)
    assert result.summary["identity"]["config"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # weights stay fp32
