"""conversion: Open-MAGVIT2's LFQ tokenizer becomes a vq_hub MagvitV2Tokenizer with SEED-Voken's codes and
reconstructions.

tests/data/open_magvit2/ holds a tiny tokenizer built and run by SEED-Voken's own code (TencentARC/SEED-Voken,
`src/Open_MAGVIT2/models/lfqgan.py`; conversion/make_open_magvit2_test_data.py records how, reference.json with
what): its Lightning checkpoint (trained and EMA weights, loss keys) and its outputs on fixed images. No SEED-Voken
code is needed here.
"""

import importlib.util
import json
import re

import pytest
import torch
from conftest import ROOT, assert_close_to_scale as assert_close  # within 2e-5 of each output's scale
from safetensors.torch import load_file

from vq_hub import MagvitV2Tokenizer, load_tokenizer
from vq_hub.conversion_open_magvit2 import (
    convert_open_magvit2, load_open_magvit2_state_dict, open_magvit2_config, open_magvit2_tokenizer_weights,
)  # fmt: skip

DATA = ROOT / "tests" / "data" / "open_magvit2"
CHECKPOINT = DATA / "open_magvit2_tiny.ckpt"
# Both sides compute in float32 from the same weights with the same torch modules, but SEED-Voken's swish is
# x·sigmoid(x) where ours is F.silu, and its depth-to-space a view where ours a reshape: differences are rounding,
# measured 9.5e-7 on latents and 1.0e-5 on reconstructions of scale 4.9 (2e-6 of it). The bound is 2e-5 of each
# output's largest magnitude: ten times that, far below any mapping mistake (a swapped weight moves outputs by their
# own scale). Codes are signs and are compared exactly: the smallest |latent| of the stored inputs is 1.6e-3
# (reference.json), a thousand times the latents' rounding.


@pytest.fixture(scope="module")
def reference():
    return load_file(DATA / "reference.safetensors")


@pytest.fixture(scope="module")
def converted():
    return convert_open_magvit2(CHECKPOINT, sample_size=16).eval()


@pytest.fixture(scope="module")
def checkpoint_state_dict():
    return load_open_magvit2_state_dict(CHECKPOINT)


def test_the_test_data_stays_small_and_says_where_it_comes_from():
    assert sum(path.stat().st_size for path in DATA.iterdir()) < 800_000
    record = json.loads((DATA / "reference.json").read_text())
    assert record["source"] == "https://github.com/TencentARC/SEED-Voken" and re.fullmatch(r"[0-9a-f]{40}",
                                                                                             record["commit"])
    assert record["use_ema"] and min(record["smallest_abs_latent"], record["smallest_abs_latent_model_weights"]) > 1e-3


def test_open_magvit2_checkpoint_converts_with_its_codes_and_reconstructions(converted, reference):
    """The EMA weights by default, as SEED-Voken's scripts run a `use_ema` model (under `ema_scope()`)."""
    images = reference["images"]
    with torch.no_grad():
        latents = converted.encode(images).latents
        assert_close(latents, reference["latents"])  # SEED-Voken's encoder(x)
        quantized = converted.quantize(latents)
        assert torch.equal(quantized.codes, reference["codes"])  # its LFQ indices: bit i = channel i > 0
        assert torch.equal(converted.tokenize(images), reference["codes"])
        assert torch.equal(quantized.quantized, reference["quantized"])  # ±1 per channel
        assert_close(converted.decode(latents).sample, reference["reconstruction"])  # decode(quant)
        assert_close(converted(images).sample, reference["reconstruction"])
        # get_codebook_entry(indices) → decode: the path its class-conditional transformer's samples take
        assert_close(converted.detokenize(reference["codes"]), reference["reconstruction_from_codes"])
    assert reference["codes"].unique().numel() > 32  # most of the 64 codes exercised, not one repeated


def test_the_trained_weights_are_taken_on_request(reference):
    model = convert_open_magvit2(CHECKPOINT, weights="model", sample_size=16).eval()
    assert not torch.equal(reference["codes_model_weights"], reference["codes"])  # EMA and trained weights differ
    with torch.no_grad():
        assert torch.equal(model.tokenize(reference["images"]), reference["codes_model_weights"])
        assert_close(model(reference["images"]).sample, reference["reconstruction_model_weights"])


def test_the_config_is_read_from_the_weights(converted):
    config = converted.config
    assert config.block_out_channels == [32, 32] and config.layers_per_block == 1 and config.latent_channels == 6
    assert converted.codebook_size == 64 and converted.downsample_factor == 2 and config.quantizer_type == "lfq"


def test_loss_and_ema_bookkeeping_are_dropped_by_rule_and_other_keys_refused_by_name(checkpoint_state_dict):
    state_dict = dict(checkpoint_state_dict)
    assert any(key.startswith("loss.discriminator.") for key in state_dict)  # as released: the loss is in there
    assert "model_ema.decay" in state_dict and "model_ema.lossdiscriminatormain0weight" in state_dict
    # LPIPS's VGG (left out of the stored checkpoint for its size) falls under the same `loss.` rule.
    state_dict["loss.perceptual_loss.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
    weights = open_magvit2_tokenizer_weights(state_dict)
    assert all(key.startswith(("encoder.", "decoder.")) for key in weights)
    with pytest.raises(ValueError, match=r"not understood.*'quantize\.mystery'"):
        open_magvit2_tokenizer_weights({**state_dict, "quantize.mystery": torch.zeros(1)})


def test_missing_weights_and_averages_are_named(checkpoint_state_dict, tmp_path):
    without = {k: v for k, v in checkpoint_state_dict.items() if k != "model_ema.decoderconv_outbias"}
    with pytest.raises(ValueError, match=r"model_ema.*lacks.*decoder\.conv_out\.bias"):
        open_magvit2_tokenizer_weights(without)
    trained_only = {k: v for k, v in checkpoint_state_dict.items() if not k.startswith("model_ema.")}
    with pytest.raises(ValueError, match="no `model_ema"):
        open_magvit2_tokenizer_weights(trained_only, weights="ema")
    torch.save({"state_dict": {k: v for k, v in trained_only.items() if k != "decoder.adaptive.1.beta.bias"}},
               tmp_path / "b.ckpt")  # fmt: skip
    with pytest.raises(ValueError, match=r"lacks 1 weight.*decoder\.adaptive\.1\.beta\.bias"):
        convert_open_magvit2(tmp_path / "b.ckpt")
    torch.save({"state_dict": {**trained_only, "encoder.down.0.block.0.conv_shortcut.weight": torch.zeros(1)}},
               tmp_path / "c.ckpt")  # a 3×3 shortcut (use_conv_shortcut=True), which no released model has
    with pytest.raises(ValueError, match=r"no place in vq_hub's MagvitV2Tokenizer.*conv_shortcut"):
        convert_open_magvit2(tmp_path / "c.ckpt")


def test_pickles_are_refused_and_bare_state_dicts_taken(checkpoint_state_dict, tmp_path):
    torch.save({"state_dict": checkpoint_state_dict, "extra": torch.nn.Identity()}, tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="weights_only=True.*allow_pickle"):
        load_open_magvit2_state_dict(tmp_path / "pickled.ckpt")
    assert "encoder.conv_in.weight" in load_open_magvit2_state_dict(tmp_path / "pickled.ckpt", allow_pickle=True)
    torch.save(checkpoint_state_dict, tmp_path / "bare.pt")
    assert load_open_magvit2_state_dict(tmp_path / "bare.pt").keys() == checkpoint_state_dict.keys()


WIDE = dict(block_out_channels=[32, 64, 64], layers_per_block=2, latent_channels=5, num_vq_embeddings=32,
            sample_size=16)  # fmt: skip


def test_a_wider_layout_converts_back_to_identical_weights(tmp_path):
    """Width changes (so `nin_shortcut`), two residual blocks per level and three levels, as the released 256px
    model has five: our weights written in SEED-Voken's form (its names, EMA under LitEma's dot-less names) come back
    unchanged."""
    generator = torch.Generator().manual_seed(3)
    model = MagvitV2Tokenizer(**WIDE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    trained = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    assert "encoder.down.1.block.0.nin_shortcut.weight" in trained
    averages = {"model_ema." + k.replace(".", ""): v + 1 for k, v in trained.items()}
    torch.save({"state_dict": {**trained, **averages, "model_ema.decay": torch.tensor(0.999)}}, tmp_path / "w.ckpt")
    assert {k: v for k, v in open_magvit2_config(trained).items() if k in WIDE} == {**WIDE, "sample_size": 256}
    converted = convert_open_magvit2(tmp_path / "w.ckpt", weights="model", sample_size=16)
    for key, value in trained.items():
        assert torch.equal(converted.state_dict()[key], value), key
    ema = convert_open_magvit2(tmp_path / "w.ckpt", sample_size=16)
    assert torch.equal(ema.state_dict()["decoder.adaptive.2.gamma.weight"], trained["decoder.adaptive.2.gamma.weight"] + 1)


def test_a_grid_of_one_position_is_refused(converted):
    with pytest.raises(ValueError, match="at least two positions"):
        converted.detokenize(torch.zeros(1, 1, 1, dtype=torch.long))


# ------------------------------------------------------------------------------------------------- script and CLI


def test_the_script_writes_a_folder_with_its_model_card(reference, tmp_path):
    spec = importlib.util.spec_from_file_location("convert_open_magvit2", ROOT / "conversion" / "convert_open_magvit2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    destination = tmp_path / "open-magvit2-tiny"
    script.main(["--ckpt", str(CHECKPOINT), "--dst", str(destination), "--image_size", "16"])

    reloaded = load_tokenizer(destination).eval()
    assert isinstance(reloaded, MagvitV2Tokenizer)
    assert torch.equal(reloaded.tokenize(reference["images"]), reference["codes"])
    card = (destination / "README.md").read_text()
    assert "license: apache-2.0" in card and "https://github.com/TencentARC/SEED-Voken" in card
    assert "MagvitV2Tokenizer.from_pretrained" in card
    assert f"python conversion/convert_open_magvit2.py --ckpt {CHECKPOINT} --dst {destination}" in card
    record = json.loads((destination / "conversion.json").read_text())
    assert record["license"] == "apache-2.0" and record["converted_from"] == str(CHECKPOINT)


def test_vq_hub_convert_open_magvit2(converted, tmp_path, capsys):
    from vq_hub.cli import main

    assert main(["convert", "open-magvit2", str(CHECKPOINT), "--out", str(tmp_path / "cli"), "--image-size", "16"]) == 0
    assert "64 codes of 6 dimensions" in capsys.readouterr().out
    loaded = load_tokenizer(tmp_path / "cli")
    for key, value in converted.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert main(["convert", "open-magvit2", str(CHECKPOINT), "--out", str(tmp_path / "x"), "--weights", "state_dict"]) == 1
    assert "`weights` must be one of" in capsys.readouterr().err
    assert main(["convert", "open-magvit2", str(CHECKPOINT), "--out", str(tmp_path / "y"), "--revision", "main"]) == 1
    assert "--revision does not apply to open-magvit2" in capsys.readouterr().err


def test_the_hub_card_of_a_saved_tokenizer_names_its_class(converted, tmp_path):
    from vq_hub.hub import write_tokenizer_card

    converted.save_pretrained(tmp_path / "tokenizer")
    card = write_tokenizer_card(tmp_path / "tokenizer", "you/open-magvit2").read_text()
    assert 'MagvitV2Tokenizer.from_pretrained("you/open-magvit2")' in card and "lookup-free quantization" in card
