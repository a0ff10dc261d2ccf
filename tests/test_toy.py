"""The first chapter's toy gives the same models, bit for bit, whatever the thread count and the CPU's vector kernels."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from reskd import toy

ROOT = Path(__file__).resolve().parents[1]
STEPS = 150  # enough for the unrounded training to drift apart between kernels; the test needs only equality
FINGERPRINT = """
import hashlib, torch
from reskd import toy
x, y = toy.spirals(50, 0)
teacher, stages = toy.fit_stages(0, x, y, {steps}, stages=2)
weights = torch.cat([p.detach().flatten() for m in [teacher, *stages] for p in m.parameters()])
print(hashlib.sha1(weights.numpy().tobytes()).hexdigest())
"""


def fingerprint(teacher, stages) -> str:
    weights = torch.cat([p.detach().flatten() for m in [teacher, *stages] for p in m.parameters()])
    return hashlib.sha1(weights.numpy().tobytes()).hexdigest()


def test_points_and_initial_weights_do_not_depend_on_torch_s_generator():
    x, y = toy.spirals(20, 0)
    assert x.dtype == toy.DTYPE and torch.equal(x, x.float().double()) and y.tolist() == sorted(y.tolist())
    torch.manual_seed(1)
    a = toy.mlp(2, 8, 3, seed=5)
    torch.manual_seed(2)
    b = toy.mlp(2, 8, 3, seed=5)
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.dtype == toy.DTYPE and torch.equal(p, q)
        assert torch.equal(p, toy.snap(p.detach().clone()))  # on the grid
        assert p.abs().max() <= 1 / 2**0.5 + 2.0**-toy.GRID_BITS  # PyTorch's bound: 1/sqrt(fan-in)
    assert not torch.equal(a[0].weight, toy.mlp(2, 8, 3, seed=6)[0].weight)


def test_snap_rounds_to_the_grid_exactly():
    t = torch.tensor([0.1, -0.3, 1e-9, 2.0**-toy.GRID_BITS * 2.5], dtype=toy.DTYPE)
    snapped = toy.snap(t.clone())
    assert torch.equal(snapped * 2**toy.GRID_BITS, (snapped * 2**toy.GRID_BITS).round())
    assert (snapped - t).abs().max() <= 2.0**-(toy.GRID_BITS + 1)


def test_training_is_the_same_at_any_thread_count():
    x, y = toy.spirals(50, 0)
    threads = torch.get_num_threads()
    try:
        prints = []
        for n in (1, 2):
            torch.set_num_threads(n)
            prints.append(fingerprint(*toy.fit_stages(0, x, y, STEPS, stages=2)))
            assert torch.get_num_threads() == n  # restored after each model
    finally:
        torch.set_num_threads(threads)
    assert prints[0] == prints[1]


def test_training_is_the_same_with_another_cpu_s_kernels():
    """ATen's scalar kernels (ATEN_CPU_CAPABILITY=default, what a CPU without AVX2 runs) sum and round differently
    from the vectorised ones: without the weight grid (GRID_BITS = 60, no rounding) these two fingerprints differ,
    and the chapter's full-length toys differ in the second decimal of the accuracy."""
    x, y = toy.spirals(50, 0)
    here = fingerprint(*toy.fit_stages(0, x, y, STEPS, stages=2))
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    other = subprocess.run([sys.executable, "-c", FINGERPRINT.format(steps=STEPS)], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert other == here
