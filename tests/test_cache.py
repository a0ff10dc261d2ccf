import copy
import threading
import time

import torch

from reskd.cache import TEACHER_CACHE_NAME, OutputCache
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


def test_a_claim_holds_a_view_while_it_is_computed_and_nothing_once_it_is_stored(tmp_path):
    model = TinyNet()
    x, idx = torch.randn(4, 3, 8, 8), torch.arange(4)
    cache, observer = OutputCache(model, tmp_path), OutputCache(model, tmp_path)  # e.g. two processes
    with cache.claim("v", 4):
        assert observer.view_busy("v")
        cache(x, idx, "v", 4)
        cache.flush()
    assert not observer.view_busy("v") and observer.is_stored("v", 4)
    with cache.claim("v", 4):
        assert not observer.view_busy("v")
    with OutputCache(model, None).claim("v", 4):  # in memory only: no lock to take
        pass


def test_a_claim_waits_for_a_view_another_worker_computes_and_then_reads_it(tmp_path):
    model = TinyNet()
    calls = counting(model)
    x, idx = torch.randn(4, 3, 8, 8), torch.arange(4)
    worker, waiter = OutputCache(model, tmp_path), OutputCache(model, tmp_path)
    locked, events = threading.Event(), []

    def compute():
        with worker.view_lock("v"):
            locked.set()
            worker(x, idx, "v", 4)
            worker.flush()
            events.append("stored")

    thread = threading.Thread(target=compute)
    thread.start()
    locked.wait()
    with waiter.claim("v", 4):  # the worker holds the view's lock: this waits for it
        events.append("claimed")
        assert not worker.view_busy("v")  # the stored view is not held while it is read
        out = waiter(torch.zeros_like(x), idx, "v", 4)
    thread.join()
    assert events == ["stored", "claimed"]
    assert calls["n"] == 4 and waiter.stats.misses == 0 and waiter.stats.hits == 4
    torch.testing.assert_close(out, model(x).half().float())


def test_a_claim_on_a_view_its_worker_left_unfinished_computes_it(tmp_path):
    model = TinyNet()
    x, idx = torch.randn(4, 3, 8, 8), torch.arange(4)
    worker, waiter = OutputCache(model, tmp_path), OutputCache(model, tmp_path)
    locked = threading.Event()

    def give_up():
        with worker.view_lock("v"):
            locked.set()

    thread = threading.Thread(target=give_up)
    thread.start()
    locked.wait()
    with waiter.claim("v", 4):
        assert worker.view_busy("v")  # nothing was stored: this claim keeps the lock and computes
        waiter(x, idx, "v", 4)
        waiter.flush()
    thread.join()
    assert waiter.stats.misses == 4 and worker.is_stored("v", 4)


def test_a_training_epoch_claims_the_view_whose_teacher_outputs_it_computes(tmp_path):
    """Another process training on the same view (another seed, a res-student) waits for these outputs."""
    data = tiny_images(32)
    teacher = TinyNet(width=16)
    loader = Loader(data, tiny_spec(), 16, train=True)
    observer = OutputCache(teacher, tmp_path, name=TEACHER_CACHE_NAME)
    key = loader.view_key(0)
    claimed = []
    teacher.register_forward_hook(lambda module, inputs, output: claimed.append(observer.view_busy(key)))
    fit(KD(TinyNet(), teacher, cache_root=tmp_path), loader, TrainConfig(epochs=1, batch_size=16, lr=0.05),
        device="cpu", progress=False)
    assert claimed == [True, True]  # both batches of the epoch were computed under the view's lock
    assert not observer.view_busy(key) and observer.is_stored(key, len(data))


def test_a_training_epoch_waits_for_a_view_another_worker_computes_and_records_the_wait(tmp_path, monkeypatch):
    data = tiny_images(32)
    teacher = TinyNet(width=16)
    other_teacher = copy.deepcopy(teacher)  # the same weights in another worker: the same cache entries
    calls = counting(teacher)
    loader = Loader(data, tiny_spec(), 16, train=True)
    key, worker = loader.view_key(0), OutputCache(other_teacher, tmp_path, name=TEACHER_CACHE_NAME)
    locked, waiting, hold_s = threading.Event(), threading.Event(), 0.2
    busy = OutputCache.view_busy

    def seen_busy(self, view_key):  # the training's claim found the view taken: it is about to wait
        answer = busy(self, view_key)
        if answer:
            waiting.set()
        return answer

    monkeypatch.setattr(OutputCache, "view_busy", seen_busy)

    def compute():
        other = Loader(data, tiny_spec(), 16, train=True)
        other.set_epoch(0)
        with worker.view_lock(key):
            locked.set()
            waiting.wait()
            time.sleep(hold_s)
            for x, _, index in other:
                worker(x, index, key, len(data))
            worker.flush()

    thread = threading.Thread(target=compute)
    thread.start()
    locked.wait()
    result = fit(KD(TinyNet(), teacher, cache_root=tmp_path), loader, TrainConfig(epochs=1, batch_size=16, lr=0.05),
                 device="cpu", progress=False)
    thread.join()
    assert calls["n"] == 0  # every teacher output of the epoch came from the other worker
    assert result.history["view_wait_s"].iloc[0] >= hold_s
    assert result.history["epoch_s"].iloc[0] >= result.history["view_wait_s"].iloc[0]
