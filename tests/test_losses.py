import math

import pytest
import torch
from conftest import tiny_vq_config

from vq_hub import PatchDiscriminator, VQVAEModel
from vq_hub.losses import (
    VQGANLoss,
    adaptive_generator_weight,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    load_lpips,
    reconstruction_loss,
)


def test_reconstruction_losses_equal_hand_computation():
    reconstruction, target = torch.tensor([[0.0, 1.0, -1.0, 2.0]]), torch.tensor([[0.5, 1.0, 0.0, 0.0]])
    # |d| = 0.5, 0, 1, 2 → L1 = 3.5/4; d² = 0.25, 0, 1, 4 → L2 = 5.25/4
    assert math.isclose(float(reconstruction_loss(reconstruction, target, "l1")), 3.5 / 4)
    assert math.isclose(float(reconstruction_loss(reconstruction, target, "l2")), 5.25 / 4)
    assert math.isclose(float(reconstruction_loss(reconstruction, target, "l1+l2")), 8.75 / 4)
    with pytest.raises(ValueError, match="`kind`"):
        reconstruction_loss(reconstruction, target, "huber")


def test_hinge_losses_equal_hand_computation():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    # relu(1 - real) = 0, 0.5, 2 → 2.5/3; relu(1 + fake) = 0, 1, 2 → 3/3
    assert math.isclose(float(discriminator_loss(real, fake, "hinge")), 0.5 * (2.5 / 3 + 1.0), rel_tol=1e-6)
    assert math.isclose(float(generator_loss(fake, "hinge")), 2.0 / 3, rel_tol=1e-6)


def test_hinge_switches_off_when_margins_are_met():
    real = torch.tensor([1.5, 3.0], requires_grad=True)
    fake = torch.tensor([-1.2, -4.0], requires_grad=True)
    loss = discriminator_loss(real, fake, "hinge")
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(real.grad == 0) and torch.all(fake.grad == 0), "no gradient once both margins are met"


def test_non_saturating_losses_equal_hand_computation():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected_d = 0.5 * ((softplus(0) + softplus(-2)) / 2 + (softplus(0) + softplus(-1)) / 2)
    assert math.isclose(float(discriminator_loss(real, fake, "non_saturating")), expected_d, rel_tol=1e-6)
    assert math.isclose(float(generator_loss(fake, "non_saturating")), (softplus(0) + softplus(1)) / 2, rel_tol=1e-6)


def test_adaptive_weight_is_gradient_norm_ratio():
    last_layer = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = (3.0 * last_layer).sum()  # gradient (3, 3), norm 3√2
    gan = (last_layer**2).sum()  # gradient (2, 4), norm √20
    weight = adaptive_generator_weight(nll, gan, last_layer, eps=0.0)
    assert math.isclose(float(weight), 3 * math.sqrt(2) / math.sqrt(20), rel_tol=1e-6)
    assert not weight.requires_grad
    clamped = adaptive_generator_weight((1e6 * last_layer).sum(), gan, last_layer, max_weight=10.0)
    assert float(clamped) == 10.0


def test_feature_matching_is_mean_l1_with_detached_targets():
    real = [torch.zeros(1, 2, 2, 2, requires_grad=True), torch.ones(1, 3)]
    fake = [torch.ones(1, 2, 2, 2, requires_grad=True), torch.full((1, 3), 3.0, requires_grad=True)]
    loss = feature_matching_loss(real, fake)
    assert math.isclose(loss.item(), (1.0 + 2.0) / 2)
    loss.backward()
    assert real[0].grad is None and fake[0].grad is not None


def test_discriminator_shapes_features_and_save_load(tmp_path):
    discriminator = PatchDiscriminator(in_channels=1, base_channels=8, num_layers=2)
    images = torch.randn(2, 1, 32, 32)
    logits, features = discriminator(images, return_features=True)
    assert logits.shape == (2, 1, 6, 6) and len(features) == 3
    discriminator.save_pretrained(tmp_path / "discriminator")
    reloaded = PatchDiscriminator.from_pretrained(tmp_path / "discriminator")
    assert torch.equal(reloaded(images), discriminator(images))
    with pytest.raises(ValueError, match="1, height, width"):
        discriminator(torch.randn(2, 3, 32, 32))


def test_lpips_is_reported_unavailable_without_local_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torch hub cache
    module, reason = load_lpips("vgg")
    assert module is None and reason


def _vqgan_setup(step_start=0, **loss_kwargs):
    model = VQVAEModel(**tiny_vq_config())
    discriminator = PatchDiscriminator(in_channels=3, base_channels=8, num_layers=1)
    loss_fn = VQGANLoss(discriminator=discriminator, discriminator_start=step_start, **loss_kwargs)
    return model, discriminator, loss_fn


def test_vqgan_generator_loss_composes_terms():
    model, discriminator, loss_fn = _vqgan_setup(perceptual_weight=0.5, discriminator_weight=0.8)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    output = model(images)
    total, terms = loss_fn.generator_loss(images, output.sample, output.quantizer_loss,
                                          model.decoder.conv_out.weight, step=0)  # fmt: skip
    expected = (terms["reconstruction_loss"] + 0.5 * terms["perceptual_loss"]
                + terms["adaptive_weight"] * terms["generator_loss"] + terms["quantizer_loss"])  # fmt: skip
    torch.testing.assert_close(total.detach(), expected)
    assert float(terms["adaptive_weight"]) > 0 and float(terms["perceptual_loss"]) > 0  # feature matching is on
    total.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in discriminator.parameters()), "generator step must not train D"
    assert all(p.requires_grad for p in discriminator.parameters())


def test_gan_waits_for_discriminator_start():
    model, _, loss_fn = _vqgan_setup(step_start=10)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    output = model(images)
    _, before = loss_fn.generator_loss(images, output.sample, output.quantizer_loss, model.decoder.conv_out.weight, 9)
    _, after = loss_fn.generator_loss(images, output.sample, output.quantizer_loss, model.decoder.conv_out.weight, 10)
    assert float(before["adaptive_weight"]) == 0 and float(before["generator_loss"]) == 0
    assert float(before["perceptual_loss"]) == 0, "feature matching starts with the discriminator"
    assert float(after["adaptive_weight"]) > 0 and float(after["perceptual_loss"]) > 0
    assert not loss_fn.gan_active(9) and loss_fn.gan_active(10)


def test_vqvae_mode_is_reconstruction_plus_quantizer():
    model = VQVAEModel(**tiny_vq_config())
    loss_fn = VQGANLoss(discriminator=None, perceptual_weight=0.0, reconstruction="l2")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    output = model(images)
    total, _ = loss_fn.generator_loss(images, output.sample, output.quantizer_loss, model.decoder.conv_out.weight, 0)
    expected = torch.nn.functional.mse_loss(output.sample, images) + output.quantizer_loss
    torch.testing.assert_close(total, expected)


def test_discriminator_loss_trains_only_discriminator():
    model, discriminator, loss_fn = _vqgan_setup()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    output = model(images)
    loss, terms = loss_fn.discriminator_loss(discriminator, images, output.sample)
    loss.backward()
    assert discriminator.conv_out.weight.grad.abs().sum() > 0
    assert model.decoder.conv_out.weight.grad is None
    assert set(terms) == {"discriminator_loss", "logits_real", "logits_fake"}
