"""conversion: LlamaGen's VQ tokenizer becomes a vq_hub VQVAEModel with LlamaGen's codes and reconstructions.

tests/data/llamagen_vq/ holds a tiny tokenizer built and run by LlamaGen's own code (FoundationVision/LlamaGen,
`tokenizer/tokenizer_image/vq_model.py`; conversion/make_llamagen_test_data.py records how, reference.json with
what): its checkpoint in LlamaGen's format and its outputs on fixed images. No LlamaGen code is needed here.
"""

import json
import re

import pytest
import torch
from conftest import ROOT, assert_close_to_scale as assert_close  # within 2e-5 of each output's scale
from safetensors.torch import load_file

from vq_hub import VQVAEModel
from vq_hub.conversion_llamagen_vq import (
    convert_llamagen_vq, llamagen_to_vq_config, load_llamagen_state_dict,
)  # fmt: skip

DATA = ROOT / "tests" / "data" / "llamagen_vq"
CHECKPOINT = DATA / "llamagen_vq_tiny.pt"
# Both sides compute in float32 from the same weights, but not in the same order (diffusers' attention and the
# l2-normalised lookup are other kernels than LlamaGen's bmm/softmax and `||z||²+||e||²−2z·e`): differences are
# rounding, about 1e-6 of the outputs' scale after ~20 layers (measured 2.6e-6 on latents of scale 3.6, 5.7e-6 on
# reconstructions of scale 5). The bound is 2e-5 of each output's largest magnitude: ten times the rounding seen,
# far below any mapping mistake (a swapped or missing weight changes outputs by their own scale). Codes are compared
# exactly: the smallest best-vs-second-best distance margin of the stored inputs is 1.1e-3 (reference.json).


@pytest.fixture(scope="module")
def reference():
    return load_file(DATA / "reference.safetensors")


@pytest.fixture(scope="module")
def converted():
    return convert_llamagen_vq(CHECKPOINT, sample_size=32).eval()


def test_the_test_data_stays_small_and_says_where_it_comes_from():
    assert sum(path.stat().st_size for path in DATA.iterdir()) < 800_000
    record = json.loads((DATA / "reference.json").read_text())
    assert record["source"] == "https://github.com/FoundationVision/LlamaGen" and re.fullmatch(r"[0-9a-f]{40}",
                                                                                                 record["commit"])
    assert record["smallest_code_margin"] > 1e-4


def test_llamagen_checkpoint_converts_with_llamagen_codes_and_reconstructions(converted, reference):
    images = reference["images"]
    with torch.no_grad():
        latents = converted.encode(images).latents
        assert_close(latents, reference["latents"])  # LlamaGen's quant_conv(encoder(x))
        quantized = converted.quantize(latents)
        assert torch.equal(quantized.codes, reference["codes"])  # LlamaGen's encode(x) indices
        assert torch.equal(converted.tokenize(images), reference["codes"])
        assert_close(quantized.quantized, reference["quantized"])  # its l2-normalised codes
        assert_close(converted.decode(latents).sample, reference["reconstruction"])  # decode(quant)
        assert_close(converted.detokenize(reference["codes"]), reference["reconstruction_from_codes"])  # decode_code
    assert reference["codes"].unique().numel() > 32  # many codes exercised, not one repeated


def test_the_config_is_read_from_the_weights(converted):
    config = converted.config
    assert config.block_out_channels == [32, 32] and config.layers_per_block == 1 and config.latent_channels == 16
    # LlamaGen has attention at the lowest-resolution level only (and in the middle blocks).
    assert config.down_block_types == ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
    assert config.up_block_types == ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
    assert (config.num_vq_embeddings, config.vq_embed_dim, config.codebook_dim) == (64, 8, None)
    assert config.use_l2_norm is True and config.legacy_beta is False and config.kmeans_init is False
    assert isinstance(converted.quantize.project_in, torch.nn.Identity)  # quant_conv goes straight to 8 channels
    # The float16 checkpoint's values arrive exactly, as float32.
    stored = torch.load(CHECKPOINT, weights_only=True)["model"]
    assert converted.quantize.embedding.weight.dtype == torch.float32
    assert torch.equal(converted.quantize.embedding.weight, stored["quantize.embedding.weight"].float())


# ------------------------------------------------------------------------------------------------- wider layouts

WIDE = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
    up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"], block_out_channels=[32, 64], layers_per_block=2,
    latent_channels=16, sample_size=32, num_vq_embeddings=64, vq_embed_dim=8, norm_num_groups=32,
    quantizer_recipe="plain", use_l2_norm=True, kmeans_init=False, dead_code_threshold=0.0,
)  # fmt: skip


def to_llamagen_key(key: str) -> str:
    """The inverse map, written independently of the converter: our key → LlamaGen's `VQModel` key."""
    key = key.replace("conv_norm_out", "norm_out")
    key = key.replace("mid_block.resnets.0.", "mid.0.").replace("mid_block.attentions.0.", "mid.1.")
    key = key.replace("mid_block.resnets.1.", "mid.2.")
    key = re.sub(r"(down|up)_blocks\.(\d+)\.", r"conv_blocks.\2.", key)
    key = key.replace("downsamplers.0.conv", "downsample.conv").replace("upsamplers.0.conv", "upsample.conv")
    key = re.sub(r"\.resnets\.(\d+)\.", r".res.\1.", key)
    key = re.sub(r"\.attentions\.(\d+)\.", r".attn.\1.", key)
    for ours, theirs in [(".conv_shortcut.", ".nin_shortcut."), (".group_norm.", ".norm."), (".to_q.", ".q."),
                         (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".proj_out.")]:  # fmt: skip
        key = key.replace(ours, theirs)
    return key


def llamagen_state_dict(model: VQVAEModel) -> dict[str, torch.Tensor]:
    """A LlamaGen-form state dict of `model` (attention projections as 1×1 convs, LlamaGen's usage buffer)."""
    state_dict = {"quantize.codebook_used": torch.zeros(65536)}
    for key, value in model.state_dict().items():
        if key.startswith("quantize.") and key != "quantize.embedding.weight":
            continue  # our statistics buffers; LlamaGen has none
        if re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", key):
            value = value[:, :, None, None]
        state_dict[to_llamagen_key(key)] = value.clone()
    return state_dict


@pytest.fixture(scope="module")
def wide_model():
    generator = torch.Generator().manual_seed(3)
    model = VQVAEModel(**WIDE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_a_wider_llamagen_layout_converts_back_to_identical_weights(wide_model, tmp_path):
    """Two channel widths (so `nin_shortcut` → `conv_shortcut`) and two residual blocks per level, as in VQ-16."""
    state_dict = llamagen_state_dict(wide_model)
    assert any(".nin_shortcut." in key for key in state_dict) and "encoder.mid.1.q.weight" in state_dict
    torch.save({"model": state_dict, "steps": 10}, tmp_path / "wide.pt")
    converted = convert_llamagen_vq(tmp_path / "wide.pt", sample_size=32)
    for name, value in WIDE.items():
        assert converted.config[name] == value, name
    expected, actual = wide_model.state_dict(), converted.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_unknown_and_missing_keys_are_named(wide_model, tmp_path):
    state_dict = llamagen_state_dict(wide_model)
    torch.save({"model": {**state_dict, "encoder.conv_blocks.0.mystery.weight": torch.zeros(1)}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"not understood.*encoder\.conv_blocks\.0\.mystery\.weight"):
        convert_llamagen_vq(tmp_path / "a.pt")
    torch.save({"model": {k: v for k, v in state_dict.items() if k != "decoder.conv_out.bias"}}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"lacks 1 weight.*decoder\.conv_out\.bias"):
        convert_llamagen_vq(tmp_path / "b.pt")
    torch.save({"model": {k: v for k, v in state_dict.items() if k != "quantize.embedding.weight"}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"quantize\.embedding\.weight"):
        convert_llamagen_vq(tmp_path / "c.pt")


def test_layouts_vq_hub_cannot_mirror_are_refused(wide_model):
    state_dict = llamagen_state_dict(wide_model)
    # decoder_ch_mult ≠ encoder_ch_mult: the decoder's lowest-resolution level twice as wide.
    widened = dict(state_dict, **{"decoder.conv_blocks.0.res.0.conv2.weight": torch.zeros(128, 64, 3, 3)})
    with pytest.raises(ValueError, match="encoder_ch_mult ≠ decoder_ch_mult"):
        llamagen_to_vq_config(widened)
    one_level = {k: v for k, v in state_dict.items() if not k.startswith("decoder.conv_blocks.1.")}
    with pytest.raises(ValueError, match="decoder levels"):
        llamagen_to_vq_config(one_level)


def test_checkpoint_entries_and_pickles(wide_model, tmp_path):
    """LlamaGen's training checkpoints hold `model`, `ema` and the run's `args` (an argparse.Namespace, allowed);
    LlamaGen's loaders take `ema` first. Any other pickled object is refused unless allowed."""
    import argparse

    model_weights = llamagen_state_dict(wide_model)
    ema_weights = {key: value + 1 for key, value in model_weights.items()}
    torch.save({"model": model_weights, "ema": ema_weights, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "t.pt")
    embedding = "quantize.embedding.weight"
    assert torch.equal(load_llamagen_state_dict(tmp_path / "t.pt")[embedding], ema_weights[embedding])
    assert torch.equal(load_llamagen_state_dict(tmp_path / "t.pt", weights="model")[embedding],
                       model_weights[embedding])  # fmt: skip
    torch.save({"model": model_weights, "extra": torch.nn.Identity()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only=True.*allow_pickle"):
        load_llamagen_state_dict(tmp_path / "pickled.pt")
    assert embedding in load_llamagen_state_dict(tmp_path / "pickled.pt", allow_pickle=True)
    torch.save({"model": model_weights}, tmp_path / "released.pt")  # the released tokenizers' form
    with pytest.raises(ValueError, match="no 'ema' entry"):
        load_llamagen_state_dict(tmp_path / "released.pt", weights="ema")


# ------------------------------------------------------------------------------------------------- script


def test_the_script_writes_a_folder_with_its_model_card(converted, reference, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_llamagen_vq", ROOT / "conversion" / "convert_llamagen_vq.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    destination = tmp_path / "llamagen-tiny"
    script.main(["--ckpt", str(CHECKPOINT), "--dst", str(destination), "--image_size", "32"])

    reloaded = VQVAEModel.from_pretrained(destination).eval()
    assert torch.equal(reloaded.tokenize(reference["images"]), reference["codes"])
    card = (destination / "README.md").read_text()
    assert "license: mit" in card and "https://github.com/FoundationVision/LlamaGen" in card
    assert f"python conversion/convert_llamagen_vq.py --ckpt {CHECKPOINT} --dst {destination}" in card
    record = json.loads((destination / "conversion.json").read_text())
    assert record["license"] == "mit" and record["converted_from"] == str(CHECKPOINT)


def test_vq_hub_convert_writes_the_scripts_model_and_refuses_foreign_options(tmp_path, capsys):
    """`vq-hub convert llamagen-vq` is the library's converter behind the command line: the same weights as the
    function, a card with the command that made it, and a flag of another kind refused, not ignored."""
    from vq_hub.cli import main

    assert main(["convert", "llamagen-vq", str(CHECKPOINT), "--out", str(tmp_path / "cli")]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = VQVAEModel.from_pretrained(tmp_path / "cli")
    direct = convert_llamagen_vq(CHECKPOINT)
    for key, value in direct.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    assert f"vq-hub convert llamagen-vq {CHECKPOINT} --out {tmp_path / 'cli'}" in (tmp_path / "cli" / "README.md").read_text()
    assert main(["convert", "llamagen-vq", str(CHECKPOINT), "--out", str(tmp_path / "x"), "--subfolder", "vqvae"]) == 1
    assert "--subfolder does not apply to llamagen-vq" in capsys.readouterr().err
    assert main(["convert", "taming", str(CHECKPOINT), "--out", str(tmp_path / "y")]) == 1
    assert "taming needs --config" in capsys.readouterr().err
