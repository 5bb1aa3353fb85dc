"""Adversarial losses on raw discriminator logits, and the adaptive generator weight of VQ-GAN.

The logits are never passed through a sigmoid first: a hinge on sigmoid outputs (diffusers' VQGAN example) can never
reach its margin of 1, so the hinge never switches off.
"""

import torch
import torch.nn.functional as F

GAN_LOSSES = ("hinge", "non_saturating")


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Hinge: ½(E[relu(1 − D(x))] + E[relu(1 + D(x̂))]); non-saturating: ½(E[softplus(−D(x))] + E[softplus(D(x̂))])."""
    _check_kind(kind)
    logits_real, logits_fake = logits_real.float(), logits_fake.float()
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Hinge: −E[D(x̂)] (as taming-transformers); non-saturating: E[softplus(−D(x̂))]."""
    _check_kind(kind)
    if kind == "hinge":
        return -logits_fake.float().mean()
    return F.softplus(-logits_fake.float()).mean()


def adaptive_generator_weight(
    nll_loss: torch.Tensor,
    generator_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """λ = ‖∇_L nll‖ / (‖∇_L g‖ + eps), clamped to [0, max_weight] and detached (Esser et al., 2021, eq. 7).

    `L` is the decoder's last layer: λ balances the GAN gradient against the reconstruction gradient where both
    enter the generator. Gradients and norms are taken in float32.
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0].float()
    generator_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0].float()
    weight = nll_grad.norm() / (generator_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


def feature_matching_loss(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance between the discriminator's activations on real and reconstructed images.

    A perceptual loss that needs no pretrained network (Larsen et al., 2016; pix2pixHD): the real activations are
    targets (detached); gradients flow through the reconstruction's.
    """
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError("`real_features` and `fake_features` must be non-empty lists of the same length")
    losses = [F.l1_loss(fake.float(), real.detach().float()) for real, fake in zip(real_features, fake_features)]
    return torch.stack(losses).mean()


def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"`kind` must be one of {GAN_LOSSES}, got {kind!r}")
