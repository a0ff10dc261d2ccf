"""Data-parallel training across processes: ``torchrun`` sets the environment, this module reads it.

Launch any entry point of the package under ``torchrun`` (``python -m torch.distributed.run``), e.g.

    torchrun --nproc_per_node 2 -m reskd.cli cifar10 cpu kd

and :func:`init_from_env` joins the process group: ``nccl`` when the processes train on GPUs, ``gloo`` on CPUs
(:data:`BACKENDS`). Each process is a *rank*; rank 0 is the main one (:func:`is_main`), which alone writes run files.
Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing is initialised and every helper answers as for one
process: rank 0 of a world of 1, sums unchanged, barriers that return at once.

What the package does with it: :class:`reskd.data.Loader` gives each rank its slice of every global batch (training)
or its share of the batches (evaluation), :func:`reskd.train.fit` wraps only the student in
``DistributedDataParallel``, all-reduces the epoch's metric sums and gathers the evaluation logits before anything is
logged, and lets rank 0 alone write checkpoints.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn

#: The collective backend for the device type the processes train on.
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
WORLD_SIZE_ENV, RANK_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "RANK", "LOCAL_RANK"
#: How long a collective waits for the other ranks (a rank that loads or waits for a data set lags behind).
TIMEOUT = timedelta(minutes=30)
#: How the learning rate follows the number of processes: the config's lr is the global batch's, which is the
#: config's batch_size whatever the world size, so the lr is used as given.
LR_SCALING = "none: the config's lr and batch_size are the global batch's, split over the ranks"


def backend_for(device: str | torch.device) -> str:
    """The backend for processes training on ``device``: nccl on GPUs, gloo on CPUs."""
    kind = torch.device(device).type
    if kind not in BACKENDS:
        raise ValueError(f"no distributed backend is set for device type {kind!r}; train on one of "
                         f"{', '.join(BACKENDS)}.")
    return BACKENDS[kind]


def is_initialized() -> bool:
    """Whether this process belongs to a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this is rank 0, the process that writes run files."""
    return rank() == 0


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``; 0 without it): the GPU it trains on."""
    return int(os.environ.get(LOCAL_RANK_ENV, 0))


def init_from_env(device: str | torch.device = "auto") -> bool:
    """Join the process group that torchrun describes in the environment; returns whether there are several ranks.

    ``device`` is where the processes train ("auto": the GPU when there is one); with a GPU each process takes the
    one of its local rank. Calling it again, or without torchrun's variables, does nothing."""
    if is_initialized():
        return world_size() > 1
    if int(os.environ.get(WORLD_SIZE_ENV, 1)) <= 1:
        return False
    if device == "auto" or device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, init_method="env://", timeout=TIMEOUT)
    return world_size() > 1


def shutdown() -> None:
    """Leave the process group (when in one)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing with one process)."""
    if is_initialized():
        dist.barrier()


def _reduce_device() -> torch.device:
    """Where collective tensors live: the current GPU under nccl, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(sums: Mapping[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (in float64; every rank must pass the same keys in the same order)."""
    if not is_initialized():
        return dict(sums)
    values = torch.tensor(list(sums.values()), dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(values)
    return dict(zip(sums, values.tolist()))


def all_reduce_tensor(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over the ranks (``op``: "sum" or "max"), on the tensor's own device."""
    if not is_initialized():
        return tensor
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    buffer = tensor.to(_reduce_device())
    dist.all_reduce(buffer, op=ops[op])
    return buffer.to(tensor.device)


def run_identity(global_batch: int) -> dict[str, Any]:
    """What a run records of its processes when there are several: world size, backend, per-rank and global batch
    and the learning-rate rule (nothing for one process, so the keys of one-process runs stay as they were)."""
    if world_size() == 1:
        return {}
    return {"world_size": world_size(), "backend": dist.get_backend(), "global_batch": global_batch,
            "per_rank_batch": global_batch // world_size(), "lr_scaling": LR_SCALING}


def average_buffers(model: nn.Module) -> None:
    """Average ``model``'s floating-point buffers (BatchNorm's running statistics) over the ranks, so that every rank
    ends an epoch with the same model: under DDP each rank's last forward pass updated them from its own slice of
    the batch, and their mean is the update from the whole batch's mean. Nothing with one process."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.copy_(all_reduce_tensor(buffer.detach().clone()) / world_size())


def wrap_student(student: nn.Module, device: torch.device) -> nn.Module:
    """``student`` in ``DistributedDataParallel`` when there are several ranks (else ``student`` itself)."""
    if world_size() == 1:
        return student
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(student, device_ids=device_ids)


@contextlib.contextmanager
def student_swapped(distiller: nn.Module, wrapped: nn.Module) -> Iterator[None]:
    """``distiller.student`` replaced by ``wrapped`` (its DDP wrapper) for the duration, so that the distiller's
    loss runs the student through DDP (gradients averaged over the ranks) while the teacher and frozen stages stay
    unwrapped."""
    student = distiller.student
    if wrapped is student:
        yield
        return
    distiller.student = wrapped
    try:
        yield
    finally:
        distiller.student = student
