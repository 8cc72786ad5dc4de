"""DistributedDataParallel under `torchrun`: the process group, and the few collectives the loop needs.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and the rendezvous address); without them this is
a world of one and every call here is a no-op, so single-process training runs the same code.
NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, metrics and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def join(device_type: str) -> World:
    """Join the process group torchrun describes in the environment (a world of one otherwise)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(world: World, values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (float64 on the CPU: exact for counts)."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def any_across(world: World, flag: bool) -> bool:
    """True on every rank if it is true on any (e.g. a stop signal that reached one rank first).

    A collective whose answer the host needs, so on GPUs it waits for the queued work: the loop
    asks only every `STOP_CHECK_EVERY` steps, at checkpoints and at the epoch's end."""
    return sum_across(world, [float(flag)])[0] > 0 if world.distributed else flag


def sync_buffers(world: World, model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP averages gradients, so parameters agree; but each rank's last forward pass updated its
    running statistics with its own batch. Before validation and at the end they are made equal,
    so every rank scores (and decides early stopping) with the same model rank 0 saves.
    """
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def weights_fingerprint(model: torch.nn.Module) -> list[float]:
    """Two numbers that differ when any weight differs (sum and sum of squares, in float64)."""
    total = squares = 0.0
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            values = tensor.detach().double()
            total += float(values.sum())
            squares += float((values * values).sum())
    return [total, squares]


def check_in_sync(world: World, model: torch.nn.Module) -> bool:
    """True when every rank holds the same weights (DDP keeps them so; this proves it)."""
    if not world.distributed:
        return True
    mine = torch.tensor(weights_fingerprint(model), dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(world.size)]
    if dist.get_backend() == "nccl":
        mine, gathered = mine.cuda(), [g.cuda() for g in gathered]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g.cpu(), mine.cpu()) for g in gathered)
