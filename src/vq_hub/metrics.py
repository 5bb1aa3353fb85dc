"""Metrics shared by the quantizers, the training scripts and the benchmarks."""

import torch

from .utils.distributed import all_reduce_sum


def code_counts(codes: torch.Tensor, codebook_size: int, sync: bool = False) -> torch.Tensor:
    """How often each code occurs in `codes`, as a float32 vector of length `codebook_size`.

    With `sync=True` the counts are summed over all data-parallel ranks, so statistics derived from them describe
    the global batch rather than one process's shard.
    """
    flat = codes.reshape(-1)
    # index_add_, not bincount: on a GPU bincount reads the largest code back to the host first (a sync per step).
    counts = torch.zeros(codebook_size, device=codes.device).index_add_(0, flat, torch.ones(flat.shape, device=codes.device))
    return all_reduce_sum(counts) if sync else counts


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code distribution: 1 when one code is used, `K` when all `K` are used equally."""
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp()


def codebook_usage(counts: torch.Tensor) -> torch.Tensor:
    """Fraction of the codebook that occurs at least once."""
    return (counts > 0).float().mean()


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, averaged over the batch (pixels in [-1, 1] by default, hence range 2)."""
    return psnr_from_mse(per_image_mse(images, reference), data_range)


def per_image_mse(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image, (B,), in float32."""
    if images.shape != reference.shape:
        raise ValueError(f"`images` {tuple(images.shape)} and `reference` {tuple(reference.shape)} differ in shape")
    return (images.float() - reference.float()).pow(2).flatten(1).mean(1)


def psnr_from_mse(mse: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean over images of 10·log10(range² / MSE): the per-image average, as image-quality papers report it."""
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))).mean()
