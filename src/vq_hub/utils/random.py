"""Seeded blocks of code that draw from torch's global generators, without disturbing anyone else's stream."""

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with the global CPU generator — and, for a CUDA `device`, that device's generator — seeded with
    `seed`, and restore both afterwards.

    For code that draws from the global generators and takes no `torch.Generator` (torchmetrics' KID and Inception
    Score subsets, a validation loss that calls `torch.rand`). `torch.manual_seed` inside `fork_rng(devices=[])` would
    reseed every CUDA generator and restore none: each validation would reset the training stream, and a resumed run
    would no longer match an uninterrupted one. Here no other generator is touched.
    """
    device = torch.device(device)
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
