"""Pixel reconstruction losses."""

import torch
import torch.nn.functional as F

RECONSTRUCTION_LOSSES = ("l1", "l2", "l1+l2")


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean L1, mean squared error, or their sum, computed in float32."""
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"`kind` must be one of {RECONSTRUCTION_LOSSES}, got {kind!r}")
    reconstruction, target = reconstruction.float(), target.float()
    loss = torch.zeros((), device=reconstruction.device)
    if "l1" in kind:
        loss = loss + F.l1_loss(reconstruction, target)
    if "l2" in kind:
        loss = loss + F.mse_loss(reconstruction, target)
    return loss
