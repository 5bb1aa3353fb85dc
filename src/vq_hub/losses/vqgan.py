"""The VQ-GAN objective: reconstruction + perceptual + adaptively weighted GAN + quantizer terms."""

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .gan import (
    GAN_LOSSES,
    adaptive_generator_weight,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from .reconstruction import reconstruction_loss



class VQGANLoss:
    r"""
    Generator and discriminator losses of VQ-GAN (Esser et al., 2021), with the known faults of the reference code
    fixed: logits are never squashed by a sigmoid before the hinge, the discriminator waits for
    `discriminator_start`, and the generator weight λ is computed in float32 and clamped.

    A plain VQ-VAE is `discriminator=None, perceptual_weight=0`. Without LPIPS (`perceptual=None`) the perceptual
    term is feature matching on the discriminator's activations, active once the discriminator starts.

    Args:
        discriminator: The discriminator module (unwrapped, not DDP): the generator loss runs it with frozen
            parameters, so generator updates never touch its gradients.
        perceptual: A module `(reconstruction, target) -> scalar` such as [`LPIPSLoss`], or `None`.
        reconstruction (`str`): `"l1"`, `"l2"` or `"l1+l2"`.
        perceptual_weight, discriminator_weight, quantizer_weight (`float`): Term weights.
        discriminator_start (`int`): Optimizer step from which the GAN terms (and feature matching) are on.
        gan_loss (`str`): `"hinge"` or `"non_saturating"`.
        adaptive_weight_max (`float`): Clamp for λ.
    """

    def __init__(
        self,
        discriminator: nn.Module | None = None,
        perceptual: nn.Module | None = None,
        reconstruction: str = "l1",
        perceptual_weight: float = 1.0,
        discriminator_weight: float = 0.8,
        discriminator_start: int = 0,
        gan_loss: str = "hinge",
        quantizer_weight: float = 1.0,
        adaptive_weight_max: float = 1e4,
    ):
        if gan_loss not in GAN_LOSSES:
            raise ValueError(f"`gan_loss` must be one of {GAN_LOSSES}, got {gan_loss!r}")
        self.discriminator = discriminator
        self.perceptual = perceptual
        self.reconstruction = reconstruction
        self.perceptual_weight = perceptual_weight
        self.discriminator_weight = discriminator_weight
        self.discriminator_start = discriminator_start
        self.gan_loss = gan_loss
        self.quantizer_weight = quantizer_weight
        self.adaptive_weight_max = adaptive_weight_max

    @property
    def uses_feature_matching(self) -> bool:
        return self.perceptual is None and self.perceptual_weight > 0 and self.discriminator is not None

    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and self.discriminator_weight > 0 and step >= self.discriminator_start

    def generator_loss(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        quantizer_loss: torch.Tensor,
        last_layer: torch.Tensor,
        step: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator loss and its detached terms. `last_layer` is the decoder's output weight (for λ)."""
        zero = torch.zeros((), device=images.device)
        rec = reconstruction_loss(reconstructions, images, self.reconstruction)
        perceptual, gan, weight = zero, zero, zero
        if self.perceptual is not None and self.perceptual_weight > 0:
            perceptual = self.perceptual(reconstructions, images)
        if self.gan_active(step):
            with _frozen(self.discriminator):
                if self.uses_feature_matching:
                    logits_fake, fake_features = self.discriminator(reconstructions, return_features=True)
                    with torch.no_grad():
                        _, real_features = self.discriminator(images, return_features=True)
                    perceptual = feature_matching_loss(real_features, fake_features)
                else:
                    logits_fake = self.discriminator(reconstructions)
            gan = generator_loss(logits_fake, self.gan_loss)
        nll = rec + self.perceptual_weight * perceptual
        if self.gan_active(step) and torch.is_grad_enabled():
            weight = self.discriminator_weight * adaptive_generator_weight(
                nll, gan, last_layer, max_weight=self.adaptive_weight_max
            )
        total = nll + weight * gan + self.quantizer_weight * quantizer_loss.float()
        terms = {
            "reconstruction_loss": rec,
            "perceptual_loss": perceptual,
            "generator_loss": gan,
            "adaptive_weight": weight,
            "quantizer_loss": quantizer_loss,
            "total_loss": total,
        }
        return total, {name: value.detach() for name, value in terms.items()}

    def discriminator_loss(
        self, discriminator: nn.Module, images: torch.Tensor, reconstructions: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator loss on real images and detached reconstructions. Pass the (possibly DDP-wrapped)
        discriminator that the optimizer steps."""
        logits_real = discriminator(images.detach())
        logits_fake = discriminator(reconstructions.detach())
        loss = discriminator_loss(logits_real, logits_fake, self.gan_loss)
        terms = {
            "discriminator_loss": loss,
            "logits_real": logits_real.float().mean(),
            "logits_fake": logits_fake.float().mean(),
        }
        return loss, {name: value.detach() for name, value in terms.items()}


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters that do not require grad while the graph is built, restored afterwards."""
    previous = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, requires_grad in zip(module.parameters(), previous):
            parameter.requires_grad_(requires_grad)
