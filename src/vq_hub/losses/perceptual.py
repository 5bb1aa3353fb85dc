"""LPIPS perceptual loss, used only when its pretrained weights are already on this machine (never downloaded)."""

import logging
import os

import torch
from torch import nn

logger = logging.getLogger(__name__)

# torchvision checkpoints that `lpips` loads as its backbone, by network name.
LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


class LPIPSLoss(nn.Module):
    """Frozen LPIPS in float32 whatever the training precision; grayscale inputs are repeated to RGB."""

    def __init__(self, lpips_model: nn.Module):
        super().__init__()
        self.lpips = lpips_model.eval().float().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)  # stays in eval mode: it is a fixed metric, not a model being trained

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if reconstruction.shape[1] == 1:
            reconstruction, target = reconstruction.repeat(1, 3, 1, 1), target.repeat(1, 3, 1, 1)
        with torch.autocast(device_type=reconstruction.device.type, enabled=False):
            return self.lpips(reconstruction.float(), target.float()).mean()


def load_lpips(net: str = "vgg") -> tuple[LPIPSLoss | None, str]:
    """`(LPIPSLoss, "")` when the `lpips` package and its backbone weights are available locally, else
    `(None, reason)`. Nothing is downloaded."""
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"`net` must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    try:
        import lpips
    except Exception as error:  # lpips needs torchvision, which may be missing or broken
        return None, f"the `lpips` package cannot be imported ({type(error).__name__}: {error})"
    backbone = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_BACKBONE_FILES[net])
    if not os.path.isfile(backbone):
        return None, f"the LPIPS backbone weights are not on this machine ({backbone})"
    return LPIPSLoss(lpips.LPIPS(net=net, verbose=False)), ""
