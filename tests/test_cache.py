import torch

from reskd.cache import OutputCache
from reskd.data import Loader
from reskd.distill import KD
from reskd.train import TrainConfig, fit

from helpers import TinyNet, tiny_images, tiny_spec


def counting(model):
    calls = {"n": 0}
    forward = model.forward

    def wrapped(x):
        calls["n"] += len(x)
        return forward(x)

    model.forward = wrapped
    return calls


def test_cache_serves_second_pass_from_disk(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    calls = counting(model)
    x, idx = torch.randn(10, 3, 8, 8), torch.arange(10)
    cold = OutputCache(model, tmp_path)
    first = cold(x[:6], idx[:6], "view-a", 10)
    cold(x[6:], idx[6:], "view-a", 10)
    cold.flush()
    assert calls["n"] == 10 and cold.stats.misses == 10
    torch.testing.assert_close(first, model(x[:6]).half().float())  # rounded through float16

    warm = OutputCache(model, tmp_path)
    calls["n"] = 0
    again = warm(torch.zeros_like(x[:6]), idx[:6], "view-a", 10)  # served by index, the input is not looked at
    assert calls["n"] == 0 and warm.stats.hits == 6
    assert torch.equal(again, first)
    warm(x[:6], idx[:6], "view-b", 10)  # another view is computed
    assert calls["n"] == 6


def test_cache_key_follows_weights(tmp_path):
    torch.manual_seed(0)
    a = TinyNet()
    b = TinyNet()
    assert OutputCache(a, tmp_path).model_key != OutputCache(b, tmp_path).model_key
    b.load_state_dict(a.state_dict())
    assert OutputCache(a, tmp_path).model_key == OutputCache(b, tmp_path).model_key


def test_damaged_cache_file_is_recomputed(tmp_path):
    model = TinyNet()
    x, idx = torch.randn(4, 3, 8, 8), torch.arange(4)
    cache = OutputCache(model, tmp_path)
    expected = cache(x, idx, "v", 4)
    cache.flush()
    for f in (tmp_path / cache.model_key).glob("*.pt"):
        f.write_bytes(b"garbage")
    again = OutputCache(model, tmp_path)
    torch.testing.assert_close(again(x, idx, "v", 4), expected)
    assert again.stats.misses == 4


def test_warm_cache_gives_same_training_as_cold(tmp_path):
    """A student trained with a warm teacher cache ends bit-for-bit where the cold run ended, without teacher work."""
    spec, data = tiny_spec(), tiny_images(64)
    torch.manual_seed(0)
    teacher = TinyNet(width=16)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05)

    def run():
        torch.manual_seed(1)
        d = KD(TinyNet(), teacher, cache_root=tmp_path / "cache")
        calls = counting(teacher)
        result = fit(d, Loader(data, spec, 16, train=True), config, device="cpu", progress=False)
        return result.model.state_dict(), calls["n"], d.teacher_outputs.stats

    cold_state, cold_calls, cold_stats = run()
    warm_state, warm_calls, warm_stats = run()
    assert cold_calls == 2 * 64 and cold_stats.hit_rate == 0.0
    assert warm_calls == 0 and warm_stats.hit_rate == 1.0
    for k in cold_state:
        assert torch.equal(cold_state[k], warm_state[k]), k
