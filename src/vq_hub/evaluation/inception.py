"""The standard FID (Inception v3, the figure papers report), computed only when its weights are on this machine:
nothing is ever downloaded. It needs `torch-fidelity` (`pip install torch-fidelity`), as torchmetrics' FID does."""

import os
from pathlib import Path

import torch

INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file (TF FID Inception)


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """`path` when given (it must exist), else torch-fidelity's file in the torch hub cache where an earlier download
    left it, else None."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"`inception_weights` {str(path)!r}: no such file (torch-fidelity's "
                                    f"{INCEPTION_WEIGHTS_NAME})")  # fmt: skip
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_NAME
    return cached if cached.is_file() else None


def _as_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def inception_fid(real_images: torch.Tensor, fake_images: torch.Tensor, weights: str | os.PathLike,
                  batch_size: int = 50) -> float:  # fmt: skip
    """FID with the 2048-d pool features of the TF-FID Inception v3 (torchmetrics over torch-fidelity), images
    (N, C, H, W) in [-1, 1] (grayscale repeated to RGB, resized to 299 by the network)."""
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise ModuleNotFoundError("the standard Inception FID needs torch-fidelity: pip install torch-fidelity")
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.load(weights, map_location="cpu", weights_only=True)  # a plain state dict, or refuse before unpickling it
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    for images, real in ((real_images, True), (fake_images, False)):
        for start in range(0, len(images), batch_size):
            metric.update(_as_uint8_rgb(images[start : start + batch_size]), real=real)
    return float(metric.compute())
