"""torch.distributed for training under ``torchrun``: one process per rank, each reading its shard.

``torchrun --nproc_per_node=N -m edgekd compress ...`` sets ``WORLD_SIZE``/``RANK``; the pipeline
calls ``init_from_env`` once: nccl when the run trains on CUDA (one GPU per rank, by ``LOCAL_RANK``),
gloo on the CPU. Every rank runs the same stages on the same data (so models stay identical: DDP
averages gradients, broadcasts BN buffers); only rank 0 writes the run and measures.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes; False when not launched by torchrun. ``device``:
    the recipe's training device (auto/cuda pick nccl where torch sees a GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        import torch

        cuda = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
