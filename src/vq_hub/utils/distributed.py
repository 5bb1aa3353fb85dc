"""Collectives that degrade to no-ops in a single process.

Quantizer statistics and EMA codebooks must agree across data-parallel ranks; these helpers keep that logic out
of the quantizers themselves.
"""

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (and return it); identity without a process group."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite `tensor` on every rank with rank 0's value (in place); identity without a process group."""
    if is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor
