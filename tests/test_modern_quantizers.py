"""LFQ, BSQ and SimVQ: what the older quantizers promise (straight-through gradients, token API equal to forward,
float32 under autocast, statistics, refused bad input, save/load) and their own losses against hand computation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vq_config

from vq_hub import BinarySphericalQuantizer, LookupFreeQuantizer, ResidualQuantizer, SimVQuantizer, VQVAEModel
from vq_hub.metrics import code_counts, codebook_usage, perplexity
from vq_hub.quantizers import QuantizerSettings
from vq_hub.quantizers.entropy import AnnealedWeight, binary_entropy_terms

QUANTIZERS = {
    "lfq": lambda: LookupFreeQuantizer(16, 4),
    "lfq-projected": lambda: LookupFreeQuantizer(256, 4, scale=0.5),
    "lfq-annealed": lambda: LookupFreeQuantizer(16, 4, entropy_loss_weight=1.0, entropy_loss_weight_end=0.0,
                                                entropy_loss_anneal_steps=3),  # fmt: skip
    "bsq": lambda: BinarySphericalQuantizer(16, 4),
    "bsq-projected": lambda: BinarySphericalQuantizer(1024, 4, entropy_group_size=4),
    "simvq": lambda: SimVQuantizer(16, 4),
    "simvq-lowdim": lambda: SimVQuantizer(16, 4, codebook_dim=2),
}
MODEL_TYPES = {
    "lfq": dict(quantizer_type="lfq", num_vq_embeddings=256),
    "bsq": dict(quantizer_type="bsq", num_vq_embeddings=256, entropy_loss_weight_end=0.0, entropy_loss_anneal_steps=5),
    "simvq": dict(quantizer_type="simvq", num_vq_embeddings=64),
}


@pytest.mark.parametrize("name", QUANTIZERS)
@pytest.mark.parametrize("training", [True, False])
def test_shapes_code_range_and_statistics(name, training):
    quantizer = QUANTIZERS[name]().train(training)
    latents = torch.randn(2, 4, 3, 5)
    output = quantizer(latents)
    assert output.quantized.shape == latents.shape
    assert output.codes.shape == (2, 3, 5) and output.codes.dtype == torch.long
    assert 0 <= int(output.codes.min()) and int(output.codes.max()) < quantizer.codebook_size
    for term in (output.codebook_loss, output.commitment_loss, output.auxiliary_loss, output.perplexity):
        assert term.ndim == 0 and torch.isfinite(term)
    counts = torch.bincount(output.codes.flatten(), minlength=quantizer.codebook_size).float()
    probabilities = counts / counts.sum()
    entropy = -(probabilities[counts > 0] * probabilities[counts > 0].log()).sum()
    assert torch.allclose(output.perplexity, entropy.exp())
    assert float(output.codebook_usage) == pytest.approx(float((counts > 0).sum()) / quantizer.codebook_size)


@pytest.mark.parametrize("name", QUANTIZERS)
def test_gradient_passes_straight_through_and_reaches_the_learned_parts(name):
    quantizer = QUANTIZERS[name]().train()
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    output = quantizer(latents)
    (output.quantized.pow(2).sum() + output.loss).backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    for parameter in quantizer.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


@pytest.mark.parametrize("name", QUANTIZERS)
def test_token_api_equals_forward_bit_for_bit(name):
    quantizer = QUANTIZERS[name]().eval()
    latents = torch.randn(3, 4, 2, 5)
    output = quantizer(latents)
    codes = quantizer.latents_to_codes(latents)
    assert torch.equal(codes, output.codes)
    assert torch.equal(quantizer.codes_to_latents(codes), output.quantized)


# The residual quantizer's codes have a depth axis: it joins the checks that do not depend on the code shape.
WITH_RESIDUAL = {**QUANTIZERS, "residual-lowdim": lambda: ResidualQuantizer(32, 4, depth=3, codebook_dim=2)}


@pytest.mark.parametrize("name", WITH_RESIDUAL)
def test_bf16_autocast_gives_the_float32_codes(name):
    quantizer = WITH_RESIDUAL[name]().eval()
    latents = torch.randn(4, 4, 4, 4)
    expected = quantizer(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = quantizer(latents)
        codes = quantizer.latents_to_codes(latents)
    assert torch.equal(output.codes, expected.codes) and torch.equal(codes, expected.codes)
    assert output.commitment_loss.dtype == torch.float32 and output.auxiliary_loss.dtype == torch.float32
    assert torch.allclose(output.commitment_loss, expected.commitment_loss)


def test_lfq_codes_are_the_sign_bits_and_losses_equal_hand_computation():
    quantizer = LookupFreeQuantizer(8, 3, scale=0.5, beta=0.25, entropy_loss_weight=0.0)
    latents = torch.tensor([[0.5, -2.0, 3.0], [-1.0, -1.0, 0.25]]).view(1, 2, 3).permute(0, 2, 1).unsqueeze(-1)
    output = quantizer(latents)  # latents (1, 3, 2, 1): two positions
    assert output.codes.flatten().tolist() == [1 + 4, 4]  # bit i = channel i positive
    expected = torch.tensor([[0.5, -0.5, 0.5], [-0.5, -0.5, 0.5]])
    assert torch.equal(output.quantized.squeeze(-1).squeeze(0).t(), expected)
    hand = 0.25 * ((0.0**2 + 1.5**2 + 2.5**2) + (0.5**2 + 0.5**2 + 0.25**2)) / 6
    assert float(output.commitment_loss) == pytest.approx(hand)
    assert float(output.codebook_loss) == 0.0 and float(output.auxiliary_loss) == 0.0
    bits = quantizer.codes_to_bits(output.codes)
    assert bits.flatten().tolist() == [1, 0, 1, 0, 0, 1]


def test_entropy_loss_of_one_bit_equals_hand_computation():
    """Two positions whose bit is +1 with probability 3/4 and 1/4: each sample's entropy is H(3/4), the batch's mean
    probability is 1/2, so the codebook entropy is ln 2; the loss is w·(H(3/4) − γ·ln 2)."""
    temperature, scale, weight, gamma = 4.0, 1.0, 0.3, 0.5
    quantizer = LookupFreeQuantizer(2, 1, scale=scale, entropy_temperature=temperature, entropy_loss_weight=weight,
                                    codebook_entropy_weight=gamma)  # fmt: skip
    z = math.log(3) * temperature / (4 * scale)  # logit 4·s·z/τ = ln 3, so p(+1) = 3/4
    latents = torch.tensor([z, -z]).view(1, 1, 1, 2)
    output = quantizer(latents)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(output.auxiliary_loss) == pytest.approx(weight * (h - gamma * math.log(2)), rel=1e-5)
    per_sample, codebook = quantizer.entropy_terms(latents.view(2, 1))
    assert float(per_sample) == pytest.approx(h, rel=1e-5) and float(codebook) == pytest.approx(math.log(2), rel=1e-5)


def reference_entropies(vectors: torch.Tensor, codebook: torch.Tensor, temperature: float) -> tuple[float, float]:
    """The entropies from the full `N × 2^d` soft-assignment matrix `softmax(−||z − c||² / τ)`."""
    probabilities = (-torch.cdist(vectors.double(), codebook.double()).pow(2) / temperature).softmax(dim=1)
    per_sample = -(probabilities * probabilities.clamp_min(1e-300).log()).sum(dim=1).mean()
    average = probabilities.mean(dim=0)
    return float(per_sample), float(-(average * average.clamp_min(1e-300).log()).sum())


def all_sign_patterns(bits: int, scale: float) -> torch.Tensor:
    """Row k: code k's channels, bit i of k = channel i positive."""
    return torch.tensor([[scale if (k >> i) & 1 else -scale for i in range(bits)] for k in range(2**bits)])


@pytest.mark.parametrize("kind", ["lfq", "bsq"])
def test_factorised_entropies_equal_the_full_matrix_in_one_group_and_bound_it_in_several(kind):
    bits, temperature = 6, 0.7
    vectors = torch.randn(40, bits) * 0.5 + torch.tensor([0.4, -0.3, 0.0, 0.2, 0.0, 0.1])
    vectors[:20, 3:] = vectors[:20, :3]  # dependence between the halves, which groups of 3 cannot see
    make = LookupFreeQuantizer if kind == "lfq" else BinarySphericalQuantizer
    one_group = make(2**bits, bits, entropy_temperature=temperature, entropy_group_size=bits)
    prepared = one_group.prepare(vectors)
    reference = reference_entropies(prepared, all_sign_patterns(bits, one_group.code_scale), temperature)
    per_sample, codebook = one_group.entropy_terms(prepared)
    assert float(per_sample) == pytest.approx(reference[0], rel=1e-4)
    assert float(codebook) == pytest.approx(reference[1], rel=1e-4)
    grouped = make(2**bits, bits, entropy_temperature=temperature, entropy_group_size=3)
    per_sample_grouped, codebook_grouped = grouped.entropy_terms(prepared)
    assert float(per_sample_grouped) == pytest.approx(reference[0], rel=1e-4)  # exact whatever the grouping
    assert float(codebook_grouped) > reference[1] + 1e-3  # the sum of marginal entropies bounds the joint one


@pytest.mark.parametrize("kind, temperature", [("lfq", 1.0), ("bsq", 0.5)])
def test_the_entropy_loss_alone_spreads_collapsed_latents_over_the_codebook(kind, temperature):
    """256 latents all in one code; descending the entropy loss alone (a weight of 1) brings most of the 16 codes
    into use: the loss pushes where it should."""
    make = LookupFreeQuantizer if kind == "lfq" else BinarySphericalQuantizer
    quantizer = make(16, 4, entropy_loss_weight=1.0, entropy_temperature=temperature).train()
    latents = torch.nn.Parameter(torch.full((1, 4, 16, 16), 0.5) + 0.1 * torch.randn(1, 4, 16, 16))
    optimizer = torch.optim.Adam([latents], lr=0.05)
    assert float(quantizer(latents).codebook_usage) == 1 / 16
    for _ in range(100):
        optimizer.zero_grad()
        quantizer(latents).auxiliary_loss.backward()
        optimizer.step()
    output = quantizer(latents)
    assert float(output.codebook_usage) >= 0.75 and float(output.perplexity) > 10


def test_bsq_codes_lie_on_the_unit_sphere_and_commitment_is_measured_there():
    quantizer = BinarySphericalQuantizer(16, 4, beta=1.0, entropy_loss_weight=0.0)
    latents = torch.tensor([3.0, -1.0, 0.5, -2.0]).view(1, 4, 1, 1)
    output = quantizer(latents)
    assert output.codes.flatten().tolist() == [1 + 4]
    assert torch.allclose(output.quantized.flatten(), torch.tensor([0.5, -0.5, 0.5, -0.5]))
    unit = latents.flatten() / latents.norm()
    hand = ((unit - torch.tensor([0.5, -0.5, 0.5, -0.5])) ** 2).mean()
    assert float(output.commitment_loss) == pytest.approx(float(hand))
    assert float(quantizer(latents * 100).commitment_loss) == pytest.approx(float(hand))  # scale-free


def test_entropy_weight_anneals_with_training_steps_only():
    quantizer = LookupFreeQuantizer(4, 2, entropy_loss_weight=1.0, entropy_loss_weight_end=0.2,
                                    entropy_loss_anneal_steps=4, codebook_entropy_weight=0.0)  # fmt: skip
    latents = torch.randn(2, 2, 3, 3)
    per_sample, _ = quantizer.entropy_terms(latents.permute(0, 2, 3, 1).reshape(-1, 2))
    quantizer.eval()
    assert float(quantizer(latents).auxiliary_loss) == pytest.approx(float(per_sample), rel=1e-5)
    assert int(quantizer.entropy_weight.step) == 0  # evaluation does not advance the schedule
    quantizer.train()
    seen = [float(quantizer(latents).auxiliary_loss) / float(per_sample) for _ in range(6)]
    assert seen == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2], rel=1e-5)
    assert "entropy_weight.step" in quantizer.state_dict() and int(quantizer.entropy_weight.step) == 6


def test_annealed_weight_constant_and_refused_values():
    assert float(AnnealedWeight(0.3).value()) == pytest.approx(0.3)
    assert AnnealedWeight(0.0).is_zero and not AnnealedWeight(0.0, 0.1, 10).is_zero
    with pytest.raises(ValueError, match="entropy_loss_weight"):
        AnnealedWeight(-1.0)
    with pytest.raises(ValueError, match="entropy_loss_anneal_steps"):
        AnnealedWeight(1.0, 0.0, -2)
    with pytest.raises(TypeError, match="entropy_loss_weight_end"):
        AnnealedWeight(1.0, "zero", 2)


def test_binary_entropy_terms_never_build_the_full_matrix():
    """20 bits in groups of 8: the largest tensor kept for the backward pass is N × 256, not N × 2^20."""
    sizes = []
    logits = torch.randn(64, 20, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda saved: sizes.append(saved.numel()) or saved, lambda x: x):
        per_sample, codebook = binary_entropy_terms(logits, group_size=8)
    (per_sample - codebook).backward()
    assert 64 * 64 < max(sizes) <= 64 * 256 and logits.grad.abs().sum() > 0
    assert torch.isfinite(per_sample) and 0 < float(codebook) <= 20 * math.log(2)


def test_simvq_codes_are_nearest_mapped_codes_and_only_the_map_learns():
    quantizer = SimVQuantizer(32, 3, beta=0.25).train()
    with torch.no_grad():
        quantizer.codebook_map.weight.copy_(torch.randn(3, 3))
    latents = torch.randn(2, 3, 4, 4, requires_grad=True)
    output = quantizer(latents)
    vectors = latents.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    mapped = quantizer.frozen_codebook @ quantizer.codebook_map.weight.detach().t()
    assert torch.equal(output.codes.flatten(), torch.cdist(vectors, mapped).argmin(dim=1))
    chosen = mapped[output.codes.flatten()]
    assert float(output.codebook_loss.detach()) == pytest.approx(float(((chosen - vectors) ** 2).mean()), rel=1e-5)
    assert float(output.commitment_loss.detach()) == pytest.approx(0.25 * float(((chosen - vectors) ** 2).mean()), rel=1e-5)
    assert [name for name, _ in quantizer.named_parameters()] == ["codebook_map.weight"]
    assert "frozen_codebook" in quantizer.state_dict()
    before = quantizer.frozen_codebook.clone()
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.1)
    output.codebook_loss.backward()
    optimizer.step()
    assert torch.equal(quantizer.frozen_codebook, before)
    assert not torch.equal(quantizer.codebook.detach(), mapped)  # the map moved every code at once


@pytest.mark.parametrize(
    "make, error, argument",
    [
        (lambda: LookupFreeQuantizer(12, 4), ValueError, "num_embeddings"),
        (lambda: LookupFreeQuantizer(2**30, 4), ValueError, "num_embeddings"),
        (lambda: LookupFreeQuantizer(16, 4, scale=0.0), ValueError, "scale"),
        (lambda: LookupFreeQuantizer(16, 4, scale="big"), TypeError, "scale"),
        (lambda: LookupFreeQuantizer(16, 4, entropy_temperature=0.0), ValueError, "entropy_temperature"),
        (lambda: BinarySphericalQuantizer(16, 4, entropy_group_size=0), ValueError, "entropy_group_size"),
        (lambda: BinarySphericalQuantizer(16, 4, entropy_group_size=20), ValueError, "entropy_group_size"),
        (lambda: BinarySphericalQuantizer(16, 4, entropy_loss_weight=-0.1), ValueError, "entropy_loss_weight"),
        (lambda: BinarySphericalQuantizer(16, 4, beta=-1), ValueError, "beta"),
        (lambda: SimVQuantizer(0, 4), ValueError, "num_embeddings"),
        (lambda: SimVQuantizer(16, 4, codebook_dim=2.5), TypeError, "codebook_dim"),
        (lambda: QuantizerSettings(quantizer_type="simvq", use_ema=True).build(4), ValueError, "use_ema"),
        (lambda: QuantizerSettings(quantizer_type="lfq", num_vq_embeddings=100).build(4), ValueError,
         "num_vq_embeddings"),
    ],
)  # fmt: skip
def test_bad_settings_refused_naming_the_argument(make, error, argument):
    with pytest.raises(error, match=argument):
        make()


@pytest.mark.parametrize("name", ["lfq", "bsq", "simvq"])
@pytest.mark.parametrize(
    "codes, error",
    [
        (torch.tensor([[[16]]]), ValueError),
        (torch.tensor([[[-1]]]), ValueError),
        (torch.zeros(1, 2, 2), TypeError),
        (torch.zeros(2, 2, dtype=torch.long), ValueError),
        ([[[0]]], TypeError),
    ],
)
def test_bad_codes_and_latents_refused(name, codes, error):
    quantizer = QUANTIZERS[name]()
    with pytest.raises(error, match="`codes`"):
        quantizer.codes_to_latents(codes)
    with pytest.raises(ValueError, match="`latents` must have 4 channels"):
        quantizer(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        quantizer.latents_to_codes(torch.full((1, 4, 2, 2), float("nan")))


@pytest.mark.parametrize("name", MODEL_TYPES)
def test_model_saves_and_loads_with_each_quantizer_type(name, tmp_path):
    model = VQVAEModel(**tiny_vq_config(**MODEL_TYPES[name])).train()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    for _ in range(2):  # training steps move the annealing counter, which must travel with the model
        model(images)
    model.eval()
    model.save_pretrained(tmp_path / name)
    loaded = VQVAEModel.from_pretrained(tmp_path / name).eval()
    assert type(loaded.quantize) is type(model.quantize) and loaded.config.quantizer_type == name
    assert loaded.codebook_size == MODEL_TYPES[name]["num_vq_embeddings"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        expected, output = model(images), loaded(images)
        codes = loaded.tokenize(images)
        assert torch.equal(codes, expected.codes) and torch.equal(output.sample, expected.sample)
        assert torch.equal(loaded.detokenize(codes), expected.sample)  # tokenize → detokenize = forward
        assert torch.equal(output.auxiliary_loss, expected.auxiliary_loss)


@pytest.mark.parametrize("name", MODEL_TYPES)
def test_model_tokenizes_the_same_under_bf16_autocast(name):
    model = VQVAEModel(**tiny_vq_config(**MODEL_TYPES[name])).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = model.quant_conv(model.encoder(images))
        expected = model.quantize.latents_to_codes(latents)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            codes = model.quantize.latents_to_codes(latents)
            output = model(images)
    assert torch.equal(codes, expected)
    assert output.codes.shape == expected.shape and torch.isfinite(output.sample.float()).all()


@pytest.mark.parametrize("name", MODEL_TYPES)
def test_model_cast_to_bf16_keeps_its_token_api_consistent(name):
    """Weights in bf16 (a frozen buffer, the bit values and the projections too): the quantizer still computes in
    float32, and tokenize → detokenize gives forward's codes and images."""
    model = VQVAEModel(**tiny_vq_config(**MODEL_TYPES[name])).eval().to(torch.bfloat16)
    images = torch.rand(2, 3, 16, 16, dtype=torch.bfloat16) * 2 - 1
    with torch.no_grad():
        output = model(images)
        codes = model.tokenize(images)
        reconstruction = model.detokenize(codes)
    assert torch.equal(codes, output.codes) and reconstruction.dtype == torch.bfloat16
    assert torch.equal(reconstruction, output.sample)


def test_every_new_type_is_a_settings_choice_and_a_zero_weight_is_not_computed(monkeypatch):
    for name in ("lfq", "bsq", "simvq"):
        settings = QuantizerSettings.from_dict({**MODEL_TYPES[name]})
        assert settings.build(4).codebook_size == MODEL_TYPES[name]["num_vq_embeddings"]
    quantizer = QuantizerSettings(quantizer_type="bsq", num_vq_embeddings=16, entropy_loss_weight=0.0).build(4)
    monkeypatch.setattr(quantizer, "entropy_terms", lambda vectors: pytest.fail("computed a loss weighted zero"))
    assert float(quantizer.train()(torch.randn(2, 4, 3, 3)).auxiliary_loss) == 0.0


# ------------------------------------------------------------------ the rest of the package with the new tokenizers


def tiny_tokenizer(name: str) -> VQVAEModel:
    """8×8 images → 4×4 grids; 8 bits = 256 codes for LFQ and BSQ, 256 SimVQ codes."""
    torch.manual_seed(0)
    options = {**MODEL_TYPES[name], "num_vq_embeddings": 256}
    return VQVAEModel(**tiny_vq_config(sample_size=8, **options)).eval()


@pytest.mark.parametrize("name", MODEL_TYPES)
def test_priors_codec_and_pipelines_work_with_each_new_tokenizer(name):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from vq_hub import (
        DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline,
        autoregressive_prior_config, denoiser_config,
    )  # fmt: skip
    from vq_hub.codec import compress_images, decompress_images

    vqvae = tiny_tokenizer(name)
    config = autoregressive_prior_config(vqvae, 2, hidden_size=32, num_layers=1, num_heads=2)
    assert config.vocab_size > 256  # codes + special tokens
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=AutoModelForCausalLM.from_config(config).eval())
    pipe.set_progress_bar_config(disable=True)
    codes = pipe(class_labels=[0, 1], output_type="codes", generator=torch.Generator().manual_seed(0)).codes
    assert codes.shape == (2, 4, 4) and 0 <= int(codes.min()) and int(codes.max()) < 256
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    output = decompress_images(pipe, compress_images(pipe, images, class_labels=1), output_type="pt")
    assert torch.equal(output.codes, pipe.encode_images(images))
    assert torch.equal(output.images, pipe.decode_codes(output.codes, "pt"))

    config = denoiser_config(vqvae, 2, hidden_size=32, num_layers=1, num_heads=2)
    scheduler = DiscreteDiffusionScheduler(10, 256, "mask", mask_token_id=config.mask_token_id)
    diffusion = VQDiscreteDiffusionPipeline(vqvae, AutoModelForMaskedLM.from_config(config).eval(), scheduler)
    diffusion.set_progress_bar_config(disable=True)
    sampled = diffusion(class_labels=[1], num_steps=4, output_type="codes").codes
    assert sampled.shape == (1, 4, 4) and int(sampled.max()) < 256


def test_bit_planes_draw_each_bit_of_each_code():
    from vq_hub.visualization.codebook import bit_flip_codes, bit_planes, blank_image_code

    model = tiny_tokenizer("lfq")
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    scale, padding = 2, 1
    picture = np.asarray(bit_planes(model, images, scale=scale, padding=padding))
    codes = model.tokenize(images)
    side = 8 * scale  # the image, and each bit plane, 8 pixels enlarged twice
    assert picture.shape[:2] == (2 * (side + padding), 9 * (side + padding))
    cell = model.downsample_factor * scale
    for n, bit, i, j in [(0, 0, 0, 0), (1, 7, 3, 2), (0, 3, 2, 1), (1, 5, 1, 3)]:
        top, left = n * (side + padding) + i * cell, (bit + 1) * (side + padding) + j * cell
        expected = 255 * ((int(codes[n, i, j]) >> bit) & 1)
        assert picture[top + cell // 2, left + cell // 2, 0] == expected
    base = blank_image_code(model)
    assert bit_flip_codes(model).tolist() == [base ^ (1 << bit) for bit in range(8)]
    with pytest.raises(ValueError, match="binary quantizer"):
        bit_planes(tiny_tokenizer("simvq"), images)


def test_cli_info_and_codebook_describe_the_new_tokenizers(capsys, tmp_path):
    from PIL import Image

    from vq_hub.cli import main

    for name in MODEL_TYPES:
        tiny_tokenizer(name).save_pretrained(tmp_path / name)
        assert main(["info", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        assert f"({name} quantizer)" in out and "codebook size: 256" in out
    for name in ("lfq", "bsq"):
        assert main(["info", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        assert "codes: 8 bits" in out and "bit i of a code is the sign of channel i" in out
    assert "weight 0.1 → 0 over 5 steps (at step 0)" in out  # bsq's annealed weight
    assert main(["info", str(tmp_path / "simvq")]) == 0
    assert "frozen random 256×4 codebook through a learned linear map" in capsys.readouterr().out

    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            images / f"{index}.png"
        )
    out = tmp_path / "codebook.png"
    assert main(["codebook", "--model", str(tmp_path / "lfq"), "--images", str(images), "--out", str(out)]) == 0
    assert "8 bits per code, their bit planes drawn" in capsys.readouterr().out
    with Image.open(out) as picture:
        assert picture.size == (1400, 1040)  # the codebook page with its bit-plane row
    assert main(["codebook", "--model", str(tmp_path / "bsq"), "--out", str(out), "--max-tiles", "64"]) == 0
    assert "64 code tiles in code order (give --images for usage); 8 bits per code, each bit's flip drawn" in \
        capsys.readouterr().out  # fmt: skip
    assert main(["codebook", "--model", str(tmp_path / "simvq"), "--out", str(out), "--max-tiles", "16"]) == 0
    assert "bits per code" not in capsys.readouterr().out


def test_simvq_codebook_map_is_not_weight_decayed():
    """Decay would shrink the map, hence every code (the rule of `weight_decay_groups` for codebooks)."""
    from vq_hub.training_utils import weight_decay_groups

    model = VQVAEModel(**tiny_vq_config(quantizer_type="simvq"))
    decayed, kept = weight_decay_groups(model, 0.1)
    decayed_ids = {id(p) for p in decayed["params"]}
    assert id(model.quantize.codebook_map.weight) not in decayed_ids
    assert id(model.quantize.codebook_map.weight) in {id(p) for p in kept["params"]}
    assert id(model.decoder.conv_out.weight) in decayed_ids


LOAD_IN_A_FRESH_PROCESS = """
import sys, torch
from vq_hub import VQVAEModel
images = torch.load(sys.argv[1])
results = {}
for folder in sys.argv[2:]:
    model = VQVAEModel.from_pretrained(folder).eval()
    with torch.no_grad():
        codes = model.tokenize(images)
        results[folder] = {"codes": codes, "images": model.detokenize(codes), "type": type(model.quantize).__name__}
torch.save(results, sys.argv[1] + ".out")
"""


def test_tokenizers_trained_with_each_new_quantizer_load_in_a_fresh_process(tmp_path):
    """A few optimizer steps with each new quantizer (EMA and k-means state too for the residual one), saved, then
    loaded by `from_pretrained` in another Python process: the same quantizer class, codes and images."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    configs = {**MODEL_TYPES, "residual": dict(quantizer_type="residual", quantizer_depth=2, use_ema=True,
                                               kmeans_init=True)}  # fmt: skip
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.save(images, tmp_path / "images.pt")
    models = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        model = VQVAEModel(**tiny_vq_config(**config)).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(3):
            output = model(images)
            (F.mse_loss(output.sample, images) + output.auxiliary_loss).backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval().save_pretrained(tmp_path / name)
        models[str(tmp_path / name)] = model
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, str(tmp_path / "images.pt"), *models], check=True,
                   env=env, timeout=300)  # fmt: skip
    loaded = torch.load(tmp_path / "images.pt.out")
    for folder, model in models.items():
        with torch.no_grad():
            codes = model.tokenize(images)
            assert loaded[folder]["type"] == type(model.quantize).__name__, folder
            assert torch.equal(loaded[folder]["codes"], codes), folder
            assert torch.equal(loaded[folder]["images"], model.detokenize(codes)), folder
