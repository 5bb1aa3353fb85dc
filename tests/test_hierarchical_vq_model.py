"""HierarchicalVQModel (VQ-VAE-2): shapes, per-level statistics, every quantizer per level, the token API, saving and
loading, bad input, and the single-vs-tuple boundary of `vq_hub.code_levels`."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vq_config

from vq_hub import HierarchicalVQModel, VQVAEModel, load_tokenizer
from vq_hub.code_levels import (
    as_levels, code_grid_sizes, codebook_sizes, column_name, detokenize_levels, forward_statistics, from_levels,
    is_hierarchical, level_names, tokenize_levels,
)  # fmt: skip
from vq_hub.metrics import code_counts, codebook_usage, perplexity

QUANTIZERS = {
    "vector": {},
    "vector-healthy-recipe": dict(quantizer_recipe="healthy"),
    "vector-ema-restart": dict(use_ema=True, dead_code_threshold=0.1, kmeans_init=True),
    "vector-l2-lowdim": dict(use_l2_norm=True, codebook_dim=2),
    "gumbel": dict(quantizer_type="gumbel"),
    "fsq": dict(quantizer_type="fsq", fsq_levels=[4, 2, 2], num_vq_embeddings=16),
    "lfq": dict(quantizer_type="lfq", num_vq_embeddings=16),
    "bsq": dict(quantizer_type="bsq", num_vq_embeddings=16, entropy_loss_weight_end=0.0, entropy_loss_anneal_steps=4),
    "simvq": dict(quantizer_type="simvq", num_vq_embeddings=16),
}


def tiny_hierarchical_config(**overrides) -> dict:
    """16×16 images → bottom codes 8×8 (32 codes) and top codes 4×4 (16 codes)."""
    config = dict(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=8, norm_num_groups=8,
        sample_size=16, top_block_out_channels=(16, 16), top_latent_channels=4,
        top_quantizer=dict(num_vq_embeddings=16, quantizer_recipe="plain"),
        bottom_quantizer=dict(num_vq_embeddings=32, quantizer_recipe="plain"),
    )  # fmt: skip
    config.update(overrides)
    return config


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16) * 2 - 1


def with_quantizer(level: str, name: str) -> dict:
    """A config whose `level` uses the quantizer `name` (the other level keeps the plain vector quantizer)."""
    config = tiny_hierarchical_config()
    config[f"{level}_quantizer"] = {**config[f"{level}_quantizer"], **QUANTIZERS[name]}
    return config


LEVEL_QUANTIZERS = [(level, name) for level in ("top", "bottom") for name in QUANTIZERS]


@pytest.mark.parametrize("level, name", LEVEL_QUANTIZERS)
def test_forward_shapes_statistics_and_gradients_with_every_quantizer_at_every_level(level, name):
    model = HierarchicalVQModel(**with_quantizer(level, name)).train()
    x = images()
    output = model(x)
    assert output.sample.shape == x.shape
    assert output.top_codes.shape == (2, 4, 4) and output.bottom_codes.shape == (2, 8, 8)
    assert output.codes == (output.top_codes, output.bottom_codes)
    for level_name, size in zip(("top", "bottom"), model.codebook_sizes):
        statistics = output.level_statistics(level_name)
        assert 1 <= float(statistics["perplexity"]) <= size
        assert 0 < float(statistics["codebook_usage"]) <= 1
    (F.mse_loss(output.sample, x) + output.quantizer_loss).backward()
    for module in (
        model.encoder.conv_in,
        model.top_encoder.conv_in,
        model.top_decoder.conv_out,
        model.decoder.conv_out,
    ):
        assert module.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("level, name", LEVEL_QUANTIZERS)
def test_tokenize_detokenize_equals_forward_at_eval(level, name):
    model = HierarchicalVQModel(**with_quantizer(level, name))
    x = images()
    model.train()(x)  # a training step's state changes (k-means init, EMA) first
    model.eval()
    with torch.no_grad():
        output = model(x)
        top, bottom = model.tokenize(x)
        reconstruction = model.detokenize((top, bottom))
    assert torch.equal(top, output.top_codes) and torch.equal(bottom, output.bottom_codes)
    assert torch.equal(reconstruction, output.sample)


def test_per_level_statistics_are_those_of_the_chosen_codes():
    model = HierarchicalVQModel(**tiny_hierarchical_config()).eval()
    with torch.no_grad():
        output = model(images(4))
    for level, size in zip(("top", "bottom"), model.codebook_sizes):
        counts = code_counts(getattr(output, f"{level}_codes"), size)
        assert torch.allclose(getattr(output, f"{level}_perplexity"), perplexity(counts))
        assert torch.allclose(getattr(output, f"{level}_codebook_usage"), codebook_usage(counts))


def test_a_collapsed_level_shows_in_its_own_statistics():
    model = HierarchicalVQModel(**tiny_hierarchical_config()).eval()
    with torch.no_grad():
        model.top_quantize.embedding.weight[1:] = 1e3  # every top latent is now nearest to code 0
        output = model(images(4))
    assert torch.all(output.top_codes == 0)
    assert float(output.top_perplexity) == pytest.approx(1.0) and float(output.top_codebook_usage) == 1 / 16
    assert float(output.bottom_codebook_usage) > 1 / 32
    statistics = forward_statistics(model, output)
    assert float(statistics["top_perplexity"]) == pytest.approx(1.0)
    assert set(statistics) == {f"{level}_{name}" for level in ("top", "bottom") for name in (
        "codebook_loss", "commitment_loss", "perplexity", "codebook_usage", "dead_code_restarts")}  # fmt: skip


def test_save_and_reload_gives_identical_codes_at_both_levels(tmp_path):
    config = tiny_hierarchical_config(top_quantizer=dict(num_vq_embeddings=16, use_ema=True, dead_code_threshold=0.5),
                                      bottom_quantizer=dict(quantizer_type="fsq", fsq_levels=[4, 2, 2, 2],
                                                            num_vq_embeddings=32), bottom_dropout=0.1)  # fmt: skip
    model = HierarchicalVQModel(**config).train()
    x = images(4)
    for _ in range(3):
        model(x)
    model.eval()
    model.save_pretrained(tmp_path / "tokenizer")
    saved = json.loads((tmp_path / "tokenizer" / "config.json").read_text())
    assert saved["_class_name"] == "HierarchicalVQModel"
    assert saved["top_quantizer"]["use_ema"] is True and saved["top_quantizer"]["ema_decay"] == 0.99  # defaults kept
    assert saved["bottom_quantizer"]["fsq_levels"] == [4, 2, 2, 2] and saved["bottom_dropout"] == 0.1

    for reloaded in (
        HierarchicalVQModel.from_pretrained(tmp_path / "tokenizer"),
        load_tokenizer(tmp_path / "tokenizer"),
    ):
        assert type(reloaded) is HierarchicalVQModel
        reloaded.eval()
        for key, value in model.state_dict().items():
            assert torch.equal(value, reloaded.state_dict()[key]), key
        with torch.no_grad():
            expected, got = model.tokenize(x), reloaded.tokenize(x)
            assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
            assert torch.equal(model.detokenize(expected), reloaded.detokenize(got))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_bottom_dropout_decodes_dropped_images_from_the_top_alone():
    model = HierarchicalVQModel(**tiny_hierarchical_config(bottom_dropout=0.5))
    x = images(8)
    torch.manual_seed(3)
    with torch.no_grad():
        trained = model.train()(x).sample  # plain vector quantizers: training mode changes no state
        model.eval()
        top, bottom = model.tokenize(x)
        full, top_only = model.detokenize((top, bottom)), model.detokenize_top(top)
    torch.manual_seed(3)
    dropped = torch.rand(8) < 0.5
    assert 0 < int(dropped.sum()) < 8
    for index in range(8):
        assert torch.allclose(trained[index], (top_only if dropped[index] else full)[index], atol=1e-5)
    assert not torch.allclose(full, top_only)
    assert torch.equal(model(x).sample, full), "no dropout at evaluation"


def test_the_bottom_codes_depend_on_the_top():
    model = HierarchicalVQModel(**tiny_hierarchical_config()).eval()
    with torch.no_grad():
        features = model.encoder(images())
        top_codes = model.top_quantize.latents_to_codes(model.top_quant_conv(model.top_encoder(features)))
        latents = model._bottom_latents(features, model.top_quantize.codes_to_latents(top_codes))
        other = model._bottom_latents(features, model.top_quantize.codes_to_latents((top_codes + 1) % 16))
    assert not torch.allclose(latents, other)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.zeros(1, 1, 16, 16), ValueError, "3 channels"),
        (torch.zeros(1, 3, 8, 10), ValueError, "multiples of the downsampling factor 4"),
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, "finite pixels"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.long), TypeError, "integer code grids go to `detokenize`"),
    ],
)
def test_bad_images_rejected(x, error, message):
    model = HierarchicalVQModel(**tiny_hierarchical_config()).eval()
    with pytest.raises(error, match=message):
        model.tokenize(x)
    with pytest.raises(error, match=message):
        model(x)


@pytest.mark.parametrize(
    "codes, error, message",
    [
        (torch.zeros(1, 8, 8, dtype=torch.long), TypeError, "must be a pair"),
        ((torch.zeros(1, 4, 4, dtype=torch.long),), TypeError, "must be a pair"),
        ((torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)), ValueError, "2× the top"),
        ((torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(2, 8, 8, dtype=torch.long)), ValueError, "same batch"),
        ((torch.zeros(4, 4, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long)), ValueError, "3D"),
        ((torch.full((1, 4, 4), 16), torch.zeros(1, 8, 8, dtype=torch.long)), ValueError, r"\[0, 15\]"),
        ((torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 8, 8), 32)), ValueError, r"\[0, 31\]"),
        ((torch.zeros(1, 4, 4), torch.zeros(1, 8, 8)), TypeError, "integer"),
    ],
)
def test_bad_codes_rejected(codes, error, message):
    model = HierarchicalVQModel(**tiny_hierarchical_config())
    with pytest.raises(error, match=message):
        model.detokenize(codes)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(top_quantizer=dict(num_codes=16)), r"`top_quantizer` has unknown quantizer option\(s\) \['num_codes'\]"),
        (dict(bottom_quantizer=dict(quantizer_type="product")), "quantizer_type"),
        (dict(top_quantizer=dict(quantizer_type="residual")), "single-level VQVAEModel"),
        (dict(bottom_quantizer=dict(quantizer_type="fsq", fsq_levels=[4, 2])), "product of `fsq_levels`"),
        (dict(top_block_out_channels=(16,)), "at least two entries"),
        (dict(down_block_types=("DownEncoderBlock2D",)), "down_block_types"),
        (dict(bottom_dropout=1.0), "below 1"),
        (dict(bottom_dropout=-0.1), "bottom_dropout"),
    ],
)
def test_bad_config_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        HierarchicalVQModel(**tiny_hierarchical_config(**overrides))


def test_code_levels_is_the_one_boundary_between_one_grid_and_two():
    single = VQVAEModel(**tiny_vq_config()).eval()
    double = HierarchicalVQModel(**tiny_hierarchical_config()).eval()
    x = images()
    assert level_names(single) == ("codes",) and level_names(double) == ("top", "bottom")
    assert not is_hierarchical(single) and is_hierarchical(double)
    assert codebook_sizes(single) == (32,) and codebook_sizes(double) == (16, 32)
    assert code_grid_sizes(single, 16, 16) == ((8, 8),) and code_grid_sizes(double) == ((4, 4), (8, 8))
    assert [column_name(name) for name in ("codes", "top", "bottom")] == ["codes", "top_codes", "bottom_codes"]
    with torch.no_grad():
        one, two = tokenize_levels(single, x), tokenize_levels(double, x)
        assert len(one) == 1 and torch.equal(one[0], single.tokenize(x))
        assert len(two) == 2 and all(torch.equal(a, b) for a, b in zip(two, double.tokenize(x)))
        assert torch.equal(detokenize_levels(single, one), single.detokenize(one[0]))
        assert torch.equal(detokenize_levels(double, two), double.detokenize(two))
    assert from_levels(single, one) is one[0] and as_levels(one[0]) == one
    with pytest.raises(ValueError, match="2 code level"):
        from_levels(double, one)
    with pytest.raises(TypeError, match="tensor or a tuple"):
        as_levels([[0]])


def test_load_tokenizer_returns_the_class_the_config_names(tmp_path):
    VQVAEModel(**tiny_vq_config()).save_pretrained(tmp_path / "single")
    assert type(load_tokenizer(tmp_path / "single")) is VQVAEModel
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="not a vq_hub tokenizer"):
        load_tokenizer(tmp_path / "other")
