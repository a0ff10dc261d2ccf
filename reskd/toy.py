"""The first chapter's two-dimensional toy: three noisy spirals, tiny MLPs, full-batch training.

The toy is meant to give the same numbers on every machine, so that its verdicts can be stored in the page and checked
by nbval. Three choices make it so:

* every tensor is float64 (:data:`DTYPE`): the rounding differences between CPU kernels (AVX2 against AVX-512 code
  paths, another BLAS blocking) are about 1e-16 of a value instead of 1e-7, and stay far below the printed digits
  after the few thousand optimiser steps;
* training runs full-batch (no sampling order) with a fixed optimiser, learning rate and step count, from initial
  weights drawn by NumPy's seeded generator (:func:`mlp`; PyTorch's CPU sampler draws other numbers on a CPU
  without AVX2);
* all of it runs on one thread (:func:`one_thread`), so the order of every sum is the same whatever the thread count
  the process was started with.

The points themselves are made in float64 by NumPy and rounded to float32 before they become float64 tensors, so a
last-bit difference between two CPUs' ``sin``/``cos`` does not reach them.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn


DTYPE = torch.float64
NUM_CLASSES, POINTS_PER_CLASS, NOISE, TURNS = 3, 200, 0.25, 1.5
TEACHER_HIDDEN, STUDENT_HIDDEN, NUM_STAGES = 64, 8, 4  # S0 plus three res-students
LEARNING_RATE = 0.01
#: The weights live on a grid of 2**-GRID_BITS (rounded after every step): see :func:`train`.
GRID_BITS = 20
#: Full-batch Adam steps per model, per profile.
STEPS = {"smoke": 600, "cpu": 2000, "paper": 2000}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one thread (the order of every reduction fixed), then restore the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def spirals(n_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """``NUM_CLASSES`` interleaved noisy spirals: points ``(n, 2)`` (float64 holding float32 values) and labels."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.1, 1.0, size=(NUM_CLASSES, n_per_class))
    angle = 2 * np.pi * (TURNS * t + np.arange(NUM_CLASSES)[:, None] / NUM_CLASSES)
    points = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=-1) * 3
    points += NOISE * t[..., None] * rng.standard_normal(points.shape)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    return torch.tensor(points.reshape(-1, 2).astype(np.float32), dtype=DTYPE), torch.tensor(labels)


def mlp(*widths: int, seed: int) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them, in :data:`DTYPE`. The initial weights and biases
    are PyTorch's default distribution for a linear layer, uniform on +-1/sqrt(fan-in), but drawn by NumPy's
    generator from ``seed``: PyTorch's own CPU sampler vectorises differently on different CPUs (its draws with
    AVX2 and without differ), NumPy's draws are the same everywhere."""
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        linear = nn.Linear(a, b, dtype=DTYPE)
        bound = 1 / np.sqrt(a)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, size=(b, a))))
            linear.bias.copy_(torch.from_numpy(rng.uniform(-bound, bound, size=b)))
            snap(linear.weight), snap(linear.bias)
        layers += [linear] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def macs(model: nn.Module) -> int:
    """Multiply-accumulates per input: the weights of the linear layers."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def snap(t: Tensor) -> Tensor:
    """Round ``t`` in place to the nearest multiple of ``2**-GRID_BITS`` (exact arithmetic: scaling by a power of two
    and rounding to an integer round nothing else)."""
    return t.mul_(2.0**GRID_BITS).round_().div_(2.0**GRID_BITS)


def train(model: nn.Module, x: Tensor, loss_fn: Callable[[Tensor], Tensor], steps: int) -> nn.Module:
    """``steps`` full-batch Adam steps on ``loss_fn(model(x))``, on one thread; the model in eval mode.

    After every step the weights are rounded to the grid of :func:`snap`. Gradient descent on a network is chaotic:
    two CPUs whose kernels sum in another order differ in the last bit of a gradient, and after a thousand steps in
    the second decimal of the accuracy. Rounded weights cut that chain: a last-bit difference in an update moves a
    weight to another grid point only when the exact value sits within about 1e-16 of a rounding boundary, so the
    weights after every step, and hence the trained models, are bit for bit the same."""
    with one_thread():
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, foreach=False)
        for _ in range(steps):
            optimizer.zero_grad()
            loss_fn(model(x)).backward()
            optimizer.step()
            with torch.no_grad():
                for p in model.parameters():
                    snap(p)
    return model.eval()


def fit_stages(seed: int, x: Tensor, y: Tensor, steps: int, *, stages: int = NUM_STAGES
               ) -> tuple[nn.Module, list[nn.Module]]:
    """The teacher (cross-entropy) and the stages S0, S1, ..., each fitted with the mean squared error to the
    residual the previous ones left (S0's is the teacher's logits)."""
    teacher = train(mlp(2, TEACHER_HIDDEN, TEACHER_HIDDEN, NUM_CLASSES, seed=seed), x,
                    lambda z: nn.functional.cross_entropy(z, y), steps)
    with torch.no_grad(), one_thread():
        residual = teacher(x)  # r_0 = z_T
    fitted = []
    for k in range(stages):
        target = residual.clone()
        stage = train(mlp(2, STUDENT_HIDDEN, NUM_CLASSES, seed=seed + 1 + k), x,
                      lambda z: nn.functional.mse_loss(z, target), steps)
        with torch.no_grad(), one_thread():
            residual = residual - stage(x)  # r_{k+1} = r_k - z_k
        fitted.append(stage)
    return teacher, fitted


def regress(seed: int, x: Tensor, y: Tensor, steps: int) -> nn.Module:
    """A stage-sized MLP (one hidden layer of :data:`STUDENT_HIDDEN`) fitted with the mean squared error to ``y``,
    from the initial weights of ``seed`` (the same for every target)."""
    return train(mlp(x.shape[1], STUDENT_HIDDEN, y.shape[1], seed=seed), x, lambda z: nn.functional.mse_loss(z, y),
                 steps)
