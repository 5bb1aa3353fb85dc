import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vq_config
from safetensors.torch import load_file

from vq_hub import VQVAEModel

QUANTIZER_CONFIGS = {
    "vector": {},
    "vector-ema-restart": dict(use_ema=True, dead_code_threshold=0.1, kmeans_init=True),
    "vector-l2-lowdim": dict(use_l2_norm=True, codebook_dim=2),
    "gumbel": dict(quantizer_type="gumbel"),
    "fsq": dict(quantizer_type="fsq", fsq_levels=[4, 2, 2, 2], num_vq_embeddings=32),
    "lfq": dict(quantizer_type="lfq", num_vq_embeddings=32),
    "bsq": dict(quantizer_type="bsq", num_vq_embeddings=32),
    "simvq": dict(quantizer_type="simvq", num_vq_embeddings=32),
    "residual": dict(quantizer_type="residual", quantizer_depth=3, use_ema=True, kmeans_init=True),
}


@pytest.mark.parametrize("name", QUANTIZER_CONFIGS)
def test_forward_shapes_and_gradients_reach_encoder(name):
    model = VQVAEModel(**tiny_vq_config(**QUANTIZER_CONFIGS[name])).train()
    images = torch.rand(2, 3, 16, 12) * 2 - 1
    output = model(images)
    assert output.sample.shape == images.shape
    grid = (2, 8, 6) if model.code_depth == 1 else (2, model.code_depth, 8, 6)  # residual codes: a depth axis
    assert output.codes.shape == grid and output.codes.dtype == torch.long
    assert model.code_grid_size(16, 12) == (8, 6) and model.downsample_factor == 2
    (F.mse_loss(output.sample, images) + output.quantizer_loss).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", QUANTIZER_CONFIGS)
def test_tokenize_detokenize_equals_forward_at_eval(name):
    model = VQVAEModel(**tiny_vq_config(**QUANTIZER_CONFIGS[name]))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    model.train()(images)  # one training step's state changes (k-means init, EMA) before evaluating
    model.eval()
    with torch.no_grad():
        output = model(images)
        codes = model.tokenize(images)
        reconstruction = model.detokenize(codes)
        decoded = model.decode(model.encode(images).latents).sample
    assert torch.equal(codes, output.codes)
    assert torch.equal(reconstruction, output.sample)
    assert torch.equal(decoded, output.sample)


def test_decode_accepts_codes_and_unquantized_latents():
    model = VQVAEModel(**tiny_vq_config()).eval()
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        codes = model.tokenize(images)
        assert torch.equal(model.decode(codes).sample, model.detokenize(codes))
        latents = model.quantize.codes_to_latents(codes)
        assert torch.equal(model.decode(latents, force_not_quantize=True).sample, model.detokenize(codes))
        sample, commit_loss = model.decode(model.encode(images).latents, return_dict=False)
    assert sample.shape == images.shape and commit_loss.ndim == 0


def test_save_and_reload_is_bit_identical_including_ema_buffers(tmp_path):
    model = VQVAEModel(**tiny_vq_config(use_ema=True, dead_code_threshold=0.5)).train()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    for _ in range(3):
        model(images)
    assert not torch.all(model.quantize.ema_cluster_size == 1), "EMA buffers should have moved"
    model.eval()
    model.save_pretrained(tmp_path / "tokenizer")

    saved = load_file(tmp_path / "tokenizer" / "diffusion_pytorch_model.safetensors")
    for key in ("quantize.ema_cluster_size", "quantize.ema_embed_sum", "quantize.num_restarts"):
        assert torch.equal(saved[key], model.state_dict()[key])
    config = json.loads((tmp_path / "tokenizer" / "config.json").read_text())
    assert config["_class_name"] == "VQVAEModel" and config["use_ema"] is True

    reloaded = VQVAEModel.from_pretrained(tmp_path / "tokenizer").eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    with torch.no_grad():
        assert torch.equal(model(images).sample, reloaded(images).sample)
        assert torch.equal(model.tokenize(images), reloaded.tokenize(images))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_save_replaces_existing_folder_atomically(tmp_path, monkeypatch):
    model = VQVAEModel(**tiny_vq_config())
    target = tmp_path / "tokenizer"
    model.save_pretrained(target)
    before = (target / "diffusion_pytorch_model.safetensors").read_bytes()

    def failing_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.nn.Module, "state_dict", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        VQVAEModel(**tiny_vq_config()).save_pretrained(target)
    monkeypatch.undo()
    assert (target / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]


def test_save_into_existing_folder_keeps_unrelated_files(tmp_path):
    target = tmp_path / "run"
    (target / "checkpoint-10").mkdir(parents=True)
    (target / "notes.txt").write_text("keep me")
    VQVAEModel(**tiny_vq_config()).save_pretrained(target)
    model = VQVAEModel(**tiny_vq_config(num_vq_embeddings=16))
    model.save_pretrained(target)  # overwrites the first save
    assert (target / "notes.txt").read_text() == "keep me" and (target / "checkpoint-10").is_dir()
    assert VQVAEModel.from_pretrained(target).config.num_vq_embeddings == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_mixed_precision_forward_keeps_codes():
    model = VQVAEModel(**tiny_vq_config()).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = model.encode(images).latents
        expected = model.quantize.latents_to_codes(latents)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model.quantize(latents)
    assert torch.equal(output.codes, expected)


def test_model_cast_to_bfloat16_runs():
    model = VQVAEModel(**tiny_vq_config(codebook_dim=2)).to(torch.bfloat16).eval()
    images = (torch.rand(1, 3, 16, 16) * 2 - 1).to(torch.bfloat16)
    with torch.no_grad():
        output = model(images)
        assert output.sample.dtype == torch.bfloat16
        assert model.detokenize(output.codes).shape == images.shape


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(1, 1, 16, 16), "3 channels"),
        (torch.zeros(1, 3, 15, 16), "multiples of the downsampling factor 2"),
        (torch.zeros(3, 16, 16), "4D tensor"),
    ],
)
def test_bad_images_rejected(images, message):
    model = VQVAEModel(**tiny_vq_config())
    with pytest.raises(ValueError, match=message):
        model.tokenize(images)
    with pytest.raises(ValueError, match=message):
        model(images)


@pytest.mark.parametrize(
    "codes, error, message",
    [
        (torch.full((1, 8, 8), 32), ValueError, r"\[0, 31\]"),
        (torch.zeros(1, 8, 8), TypeError, "integer"),
        (torch.zeros(8, 8, dtype=torch.long), ValueError, "3D"),
    ],
)
def test_bad_codes_rejected(codes, error, message):
    model = VQVAEModel(**tiny_vq_config())
    with pytest.raises(error, match=message):
        model.detokenize(codes)


@pytest.mark.parametrize(
    "images, error, message",
    [
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, "finite pixels"),
        (torch.full((1, 3, 16, 16), float("inf")), ValueError, "finite pixels"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.long), TypeError, "integer code grids go to `detokenize`"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.bool), TypeError, "floating point"),
        (torch.zeros(0, 3, 16, 16), ValueError, "empty batch"),
        (np.zeros((1, 3, 16, 16), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_images_that_would_give_a_silent_wrong_answer_are_refused(images, error, message):
    """NaN pixels once tokenized to code 0; [0, 255] floats were quantized as if they were [-1, 1]."""
    model = VQVAEModel(**tiny_vq_config()).eval()
    with pytest.raises(error, match=message):
        model.tokenize(images)
    with pytest.raises(error, match=message):
        model(images)


def test_any_finite_float_image_is_accepted_as_in_diffusers_and_byte_range_floats_warn_once(monkeypatch):
    """diffusers' models take any finite tensor; [0, 255] floats (the likely mistake) get one warning per process."""
    from vq_hub.models.tokenizer_utils import ImageInputMixin

    monkeypatch.setattr(ImageInputMixin, "_warned_byte_range", False)
    model = VQVAEModel(**tiny_vq_config()).eval()
    assert model(torch.full((1, 3, 16, 16), -3.0)).sample.shape == (1, 3, 16, 16)  # finite, outside [-1, 1]: no warning
    with pytest.warns(UserWarning, match=r"\[0, 255\] floats"):
        assert model.tokenize(torch.full((1, 3, 16, 16), 200.0)).shape == (1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.tokenize(torch.full((1, 3, 16, 16), 200.0))  # once


def test_unambiguous_image_dtypes_are_converted():
    model = VQVAEModel(**tiny_vq_config()).eval()
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    as_float = pixels.float() / 127.5 - 1
    codes = model.tokenize(as_float)
    assert torch.equal(model.tokenize(pixels), codes)  # uint8 is [0, 255]
    assert torch.equal(model.tokenize(as_float.double()), codes)  # float64 is cast
    bf16 = VQVAEModel(**tiny_vq_config()).to(torch.bfloat16).eval()
    assert bf16.tokenize(as_float).shape == (2, 8, 8)  # float32 images into a bf16 model
    assert bf16(as_float).sample.dtype == torch.bfloat16


def test_codes_and_latents_that_cannot_be_decoded_or_quantized_are_refused():
    model = VQVAEModel(**tiny_vq_config()).eval()
    with pytest.raises(ValueError, match="empty"):
        model.detokenize(torch.zeros(0, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        model.quantize.latents_to_codes(torch.full((1, 4, 8, 8), float("nan")))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.detokenize([[[0]]])


def test_gumbel_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature.*> 0"):
        VQVAEModel(**tiny_vq_config(quantizer_type="gumbel", gumbel_temperature=0.0))
    model = VQVAEModel(**tiny_vq_config(quantizer_type="gumbel")).train()
    model.quantize.temperature = 0.0  # annealed too far by a script
    with pytest.raises(ValueError, match="temperature.*> 0"):
        model(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(quantizer_type="product"), "quantizer_type"),
        (dict(quantizer_depth=2), "options of quantizer_type=.residual."),
        (dict(quantizer_type="fsq"), "fsq_levels"),
        (dict(quantizer_type="fsq", fsq_levels=[8, 5]), "product of `fsq_levels`"),
        (dict(quantizer_type="lfq", num_vq_embeddings=48), "num_vq_embeddings"),
        (dict(quantizer_type="simvq", use_ema=True), "use_ema"),
        (dict(block_out_channels=(16, 32, 32)), "same length"),
    ],
)
def test_bad_config_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        VQVAEModel(**tiny_vq_config(**overrides))


def test_folder_without_weights_rejected(tmp_path):
    VQVAEModel(**tiny_vq_config()).save_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        VQVAEModel.from_pretrained(tmp_path)


def test_keeps_diffusers_weight_keys():
    from diffusers import VQModel as DiffusersVQModel

    config = tiny_vq_config()
    ours = set(VQVAEModel(**config).state_dict())
    theirs = set(DiffusersVQModel(**config).state_dict())
    assert theirs <= ours
    assert ours - theirs == {"quantize.ema_cluster_size", "quantize.initialized", "quantize.num_restarts"}
