"""The GPU paths (the paper profile's and Colab's), checked against the CPU: the loader's GPU augmentation and pinned
memory, one KD training step, and masked adaptive execution. Every test is marked ``gpu`` and skips without CUDA
(``pytest -m gpu`` runs only these)."""
import dataclasses

import pytest
import torch

from reskd.adaptive import AdaptiveEnsemble, Policy, collect, confidence, exit_stages
from reskd.data import SPECS, Loader
from reskd.distill import KD, View
from reskd.models import create_model

from helpers import TinyNet, tiny_images, tiny_spec

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available())")]

#: Normalised pixels computed on the GPU and on the CPU from the same uint8 images and the same crop and flip
#: parameters: the same up to float rounding of the normalisation.
PIXEL_ATOL = 1e-5


@pytest.fixture(autouse=True)
def _deterministic_kernels():
    """cuDNN may pick nondeterministic algorithms; the comparisons below want the default, reproducible ones."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("train", [True, False], ids=["augmented", "evaluation"])
def test_loader_on_cuda_gives_the_cpu_views(train):
    """The same samples, labels and (seeded) views on the GPU as on the CPU, epoch after epoch."""
    data, spec = tiny_images(96, size=16), tiny_spec(16)
    on_cpu = Loader(data, spec, 32, train=train, seed=3, device="cpu")
    on_gpu = Loader(data, spec, 32, train=train, seed=3, device="cuda")
    assert on_gpu.view_key(0) == on_cpu.view_key(0)
    for epoch in range(2):
        on_cpu.set_epoch(epoch)
        on_gpu.set_epoch(epoch)
        batches = 0
        for (xc, yc, ic), (xg, yg, ig) in zip(on_cpu, on_gpu):
            assert xg.device.type == "cuda" and yg.device.type == "cuda" and ig.device.type == "cpu"
            assert torch.equal(ic, ig) and torch.equal(yc, yg.cpu())
            torch.testing.assert_close(xg.cpu(), xc, atol=PIXEL_ATOL, rtol=0)
            batches += 1
        assert batches == len(on_cpu) == 3


def test_loader_on_cuda_gives_the_cpu_views_with_random_resized_crops():
    """Tiny-ImageNet's augmentation (random resized crops, bilinear resampling on the device): the same crops, up to
    the resampling kernels' rounding."""
    spec = dataclasses.replace(SPECS["tiny-imagenet"], num_classes=4, image_size=16, crop_size=16,
                               train_per_class=None, test_per_class=None)
    data = tiny_images(64, size=16)
    on_cpu, on_gpu = (Loader(data, spec, 32, train=True, seed=1, device=d) for d in ("cpu", "cuda"))
    for (xc, _, ic), (xg, _, ig) in zip(on_cpu, on_gpu):
        assert torch.equal(ic, ig)
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-3, rtol=0)


def test_one_kd_step_on_cuda_matches_the_cpu():
    """A KD step (student forward, the teacher's soft targets, backward, SGD) on the GPU: the same loss terms and the
    same updated weights as on the CPU, up to float rounding."""
    x, y = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 4
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        student, teacher = TinyNet(width=8), TinyNet(width=16)
        kd = KD(student, teacher).to(device)
        kd.train()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
        _, losses = kd.loss(x.to(device), y.to(device), torch.arange(16), View("gpu-test", 16))
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        results[device] = ({k: v.item() for k, v in losses.items()},
                           {k: v.detach().cpu() for k, v in student.state_dict().items()})
    (cpu_losses, cpu_state), (gpu_losses, gpu_state) = results["cpu"], results["cuda"]
    assert cpu_losses.keys() == gpu_losses.keys() and cpu_losses
    for name in cpu_losses:
        assert gpu_losses[name] == pytest.approx(cpu_losses[name], rel=1e-4), name
    for name in cpu_state:
        torch.testing.assert_close(gpu_state[name], cpu_state[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("input_kind", ["image", "features"])
def test_adaptive_exits_on_cuda_match_the_cpu(input_kind):
    """Masked adaptive execution on the GPU stops every sample where it stops on the CPU (thresholds away from every
    sample's confidence, so that float rounding cannot decide), and returns the CPU's logits up to rounding."""
    from reskd.reskd import FeatureHead, ResKDEnsemble

    torch.manual_seed(0)
    s0 = create_model("resnet8", 4, width=0.5)
    if input_kind == "image":
        stages = [create_model("resnet8", 4, width=0.5), create_model("resnet8", 4, width=0.5)]
    else:
        stages = [FeatureHead(s0.feature_channels[-2], 4, channels=8), FeatureHead(s0.feature_channels[-2], 4)]
    ens = ResKDEnsemble(s0, stages, [input_kind] * 2, feature_index=-2).eval()
    loader = Loader(tiny_images(64, size=16), tiny_spec(16), 64, train=False)
    full = collect(ens, loader, device="cpu")
    conf = torch.stack([confidence(full.logits[k], "max_prob") for k in range(2)])
    thresholds = []
    for c in conf:  # the middle of the widest gap in the middle half of the confidences
        values = c.double().sort().values
        lo, hi = len(values) // 4, 3 * len(values) // 4
        i = int((values[lo + 1:hi + 1] - values[lo:hi]).argmax())
        thresholds.append(float((values[lo + i] + values[lo + i + 1]) / 2))
    policy = Policy("max_prob", thresholds)
    exits = exit_stages(full, policy)
    assert 0 < (exits == 0).sum() < len(exits)
    x = next(iter(loader))[0]
    on_cpu = AdaptiveEnsemble(ens, policy)
    cpu_out = on_cpu(x)
    cpu_exits = on_cpu.last_exits.clone()
    on_gpu = AdaptiveEnsemble(ens, policy).to("cuda")
    gpu_out = on_gpu(x.to("cuda"))
    assert torch.equal(cpu_exits, exits)
    assert torch.equal(on_gpu.last_exits.cpu(), cpu_exits)
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=1e-4, rtol=1e-4)
