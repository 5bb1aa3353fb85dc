"""conversion: MaskGIT's VQGAN (open-muse `MaskGitVQGAN`) becomes a vq_hub VQVAEModel with the same codes and
reconstructions.

tests/data/maskgit_vqgan/ holds a tiny `MaskGitVQGAN` saved by open-muse's own code (`model/`) with its outputs on
fixed images, and one channel-changing `ResnetBlock` with its output (conversion/make_maskgit_test_data.py records
how, reference.json with what). No open-muse code is needed here.
"""

import json
import re

import pytest
import torch
from conftest import ROOT, assert_close_to_scale as assert_close  # within 2e-5 of each output's scale
from diffusers.models.resnet import ResnetBlock2D
from safetensors.torch import load_file

from vq_hub import VQVAEModel
from vq_hub.conversion_maskgit_vqgan import (
    convert_maskgit_vqgan, load_maskgit_folder, maskgit_resnet_to_diffusers, maskgit_to_vq_config,
)  # fmt: skip

DATA = ROOT / "tests" / "data" / "maskgit_vqgan"
# float32 on both sides, in different orders and, where MaskGIT's layout differs, through weights computed from its
# own (a folded shortcut, an average pool as a convolution): rounding, measured at 2e-7 of the latents' scale and
# 2.2e-6 of the reconstructions'. The bound, 2e-5 of each output's largest magnitude, is ten times that and far below
# a mapping mistake. Codes are compared exactly; the smallest best-vs-second-best squared-distance margin of the
# stored inputs is 8.7e-5 (reference.json), against score differences of about 1e-6 here.


@pytest.fixture(scope="module")
def reference():
    return load_file(DATA / "reference.safetensors")


@pytest.fixture(scope="module")
def converted():
    return convert_maskgit_vqgan(DATA / "model").eval()


def test_the_test_data_stays_small_and_says_where_it_comes_from():
    assert sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file()) < 850_000
    record = json.loads((DATA / "reference.json").read_text())
    assert record["source"] == "https://github.com/huggingface/open-muse"
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]) and record["smallest_code_margin"] > 1e-5


def test_maskgit_vqgan_converts_with_its_codes_and_reconstructions(converted, reference):
    images = reference["images"]
    with torch.no_grad():
        latents = converted.encode(images).latents
        assert_close(latents, reference["latents"])  # MaskGIT's encoder(x)
        quantized = converted.quantize(latents)
        assert torch.equal(quantized.codes, reference["codes"])
        assert torch.equal(converted.tokenize(images), reference["codes"])
        assert_close(quantized.quantized, reference["quantized"])
        assert_close(converted.decode(latents).sample, reference["reconstruction"])
        assert_close(converted.detokenize(reference["codes"]), reference["reconstruction_from_codes"])
    assert reference["codes"].unique().numel() > 32


def test_the_config_mirrors_maskgit(converted):
    config = converted.config
    assert (config.use_quant_conv, config.use_post_quant_conv, config.mid_block_add_attention) == (False,) * 3
    assert config.block_out_channels == [32, 32] and config.layers_per_block == 2 and config.latent_channels == 8
    assert (config.num_vq_embeddings, config.vq_embed_dim, config.legacy_beta) == (64, 8, True)
    assert config.use_l2_norm is False and config.codebook_dim is None and config.sample_size == 32
    # The decoder's extra residual block per level is an exact identity: it returns its input.
    extra = converted.decoder.up_blocks[0].resnets[2]
    hidden = torch.randn(1, 32, 4, 4)
    assert torch.equal(extra(hidden, None), hidden)


def test_a_channel_changing_resnet_block_equals_maskgits(reference):
    """MaskGIT's `ResnetBlock(32, 64)` returns `h + nin_shortcut(h)` (h: its conv2 output, its input dropped); the
    converted diffusers block folds the shortcut into conv2 and multiplies its input by a zero conv_shortcut."""
    weights = {key: value for key, value in reference.items() if key.startswith("resnet.")}
    assert "resnet.nin_shortcut.weight" in weights
    block = ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=None, groups=32, eps=1e-6).eval()
    converted = maskgit_resnet_to_diffusers(weights, "resnet", "block")
    block.load_state_dict({key[len("block.") :]: value for key, value in converted.items()})
    assert torch.count_nonzero(block.conv_shortcut.weight) == 0
    with torch.no_grad():
        assert_close(block(reference["resnet_input"], None), reference["resnet_output"])


def test_unknown_and_missing_keys_are_named(tmp_path):
    config, state_dict = load_maskgit_folder(DATA / "model")

    def folder(name, weights):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        torch.save(weights, path / "pytorch_model.bin")
        return path

    with pytest.raises(ValueError, match=r"not understood.*decoder\.mystery\.weight"):
        convert_maskgit_vqgan(folder("extra", {**state_dict, "decoder.mystery.weight": torch.zeros(1)}))
    missing = {key: value for key, value in state_dict.items() if key != "decoder.up.1.upsample_conv.bias"}
    with pytest.raises(ValueError, match=r"lacks decoder\.up\.1\.upsample_conv\.bias"):
        convert_maskgit_vqgan(folder("missing", missing))
    torch.save({**state_dict, "extra": torch.nn.Identity()}, folder("pickled", {}) / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_maskgit_vqgan(tmp_path / "pickled")


def test_configs_vq_hub_cannot_mirror_are_refused():
    with pytest.raises(ValueError, match="num_res_blocks is 3"):
        maskgit_to_vq_config({"num_res_blocks": 3})
    with pytest.raises(ValueError, match="no quant_conv"):
        maskgit_to_vq_config({"z_channels": 256, "quantized_embed_dim": 64})
    with pytest.raises(ValueError, match="channel_mult must start with 1"):
        maskgit_to_vq_config({"channel_mult": [2, 2]})


def test_the_script_writes_a_folder_with_its_model_card(reference, tmp_path):
    import importlib.util

    path = ROOT / "conversion" / "convert_maskgit_vqgan.py"
    spec = importlib.util.spec_from_file_location("convert_maskgit_vqgan", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    destination = tmp_path / "maskgit-tiny"
    script.main(["--src", str(DATA / "model"), "--dst", str(destination)])

    reloaded = VQVAEModel.from_pretrained(destination).eval()
    assert torch.equal(reloaded.tokenize(reference["images"]), reference["codes"])
    card = (destination / "README.md").read_text()
    assert "license: apache-2.0" in card and "https://github.com/huggingface/open-muse" in card
    assert f"python conversion/convert_maskgit_vqgan.py --src {DATA / 'model'} --dst {destination}" in card
    assert json.loads((destination / "conversion.json").read_text())["license"] == "apache-2.0"
