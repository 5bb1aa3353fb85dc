"""conversion: diffusers VQModel and taming-transformers VQGAN checkpoints become vq_hub VQModels, proven equal."""

import argparse
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT
from diffusers import VQModel as DiffusersVQModel

from vq_hub import VQVAEModel
from vq_hub.conversion import (
    convert_diffusers_vqmodel, convert_taming_vqgan, load_taming_config, taming_state_dict_to_vq, taming_to_vq_config,
)  # fmt: skip

SMALL = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
    latent_channels=8, vq_embed_dim=4, num_vq_embeddings=64, norm_num_groups=8, sample_size=16,
)  # fmt: skip


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight random (no zero-initialised layer hides a mapping mistake)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diffusers") / "vqmodel"
    randomized(DiffusersVQModel(**SMALL, lookup_from_codebook=False, force_upcast=False)).save_pretrained(folder)
    return folder


def test_diffusers_vqmodel_converts_with_identical_outputs(diffusers_folder, tmp_path):
    theirs = DiffusersVQModel.from_pretrained(diffusers_folder).eval()
    ours = convert_diffusers_vqmodel(diffusers_folder).eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents_theirs, latents_ours = theirs.encode(images).latents, ours.encode(images).latents
        assert (latents_theirs - latents_ours).abs().max() <= 1e-5
        _, _, (_, _, indices) = theirs.quantize(latents_theirs)
        assert torch.equal(ours.tokenize(images), indices.reshape(2, 8, 8))
        difference = (theirs.decode(latents_theirs).sample - ours.decode(latents_ours).sample).abs().max()
        assert difference <= 1e-5
        assert torch.equal(ours.quantize.embedding.weight, theirs.quantize.embedding.weight)
    assert ours.config.legacy_beta is False and "lookup_from_codebook" not in ours.config

    ours.save_pretrained(tmp_path / "converted")
    reloaded = VQVAEModel.from_pretrained(tmp_path / "converted").eval()
    assert torch.equal(reloaded.tokenize(images), ours.tokenize(images))


def quantizer_gradients(quantizer, latents: torch.Tensor, loss_of) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the quantizer loss with respect to the latents and the codebook (β placement shows only here)."""
    latents = latents.clone().requires_grad_(True)
    quantizer.zero_grad()
    loss_of(quantizer(latents)).backward()
    return latents.grad, quantizer.embedding.weight.grad


def test_legacy_beta_reproduces_diffusers_quantizer_gradients(diffusers_folder):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    theirs = quantizer_gradients(DiffusersVQModel.from_pretrained(diffusers_folder).quantize, latents,
                                 lambda output: output[1])  # fmt: skip

    def ours_loss(output):
        return output.codebook_loss + output.commitment_loss

    legacy = quantizer_gradients(convert_diffusers_vqmodel(diffusers_folder, legacy_beta=True).quantize, latents,
                                 ours_loss)  # fmt: skip
    default = quantizer_gradients(convert_diffusers_vqmodel(diffusers_folder).quantize, latents, ours_loss)
    for ours_grad, their_grad in zip(legacy, theirs):
        assert torch.allclose(ours_grad, their_grad, atol=1e-7)
    # β on the commitment term: the encoder gets β·, the codebook 1· the pull (diffusers: the other way round).
    assert torch.allclose(default[0], theirs[0] * 0.25, atol=1e-7)
    assert torch.allclose(default[1], theirs[1] / 0.25, atol=1e-6)


# ------------------------------------------------------------------------------------------------- taming

TAMING_YAML = """
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQVAEModel
  params:
    embed_dim: 4
    n_embed: 64
    ddconfig:
      double_z: false
      z_channels: 8
      resolution: 16
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2]
      num_res_blocks: 1
      attn_resolutions: [8]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_start: 10000
"""


def to_taming_key(key: str, num_levels: int) -> str:
    """The inverse map, written independently of the converter: our key → taming-transformers' key."""
    key = key.replace("conv_norm_out", "norm_out")
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m.group(1)) + 1}", key)
    key = key.replace("mid_block.attentions.0", "mid.attn_1")
    key = re.sub(r"encoder\.down_blocks\.(\d+)", r"encoder.down.\1", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)", lambda m: f"decoder.up.{num_levels - 1 - int(m.group(1))}", key)
    key = key.replace("downsamplers.0.conv", "downsample.conv").replace("upsamplers.0.conv", "upsample.conv")
    key = re.sub(r"\.resnets\.(\d+)\.", r".block.\1.", key)
    key = re.sub(r"\.attentions\.(\d+)\.", r".attn.\1.", key)
    for ours, theirs in [(".conv_shortcut.", ".nin_shortcut."), (".group_norm.", ".norm."), (".to_q.", ".q."),
                         (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".proj_out.")]:  # fmt: skip
        key = key.replace(ours, theirs)
    return key


def taming_checkpoint(model: VQVAEModel, folder, extra: dict | None = None, **payload_extra):
    """A Lightning-style .ckpt with taming's key names (attention projections as 1×1 convs) and loss.* weights."""
    state_dict = {}
    for key, value in model.state_dict().items():
        if key.startswith("quantize.") and key != "quantize.embedding.weight":
            continue  # our statistics buffers; taming has none
        if re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", key):
            value = value[:, :, None, None]
        state_dict[to_taming_key(key, len(model.config.block_out_channels))] = value.clone()
    state_dict["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state_dict.update(extra or {})
    path = folder / "last.ckpt"
    torch.save({"state_dict": state_dict, "epoch": 3, **payload_extra}, path)
    return path


@pytest.fixture
def taming_files(tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text(TAMING_YAML)
    model = randomized(VQVAEModel(**taming_to_vq_config(load_taming_config(config))))
    return model, config, taming_checkpoint(model, tmp_path)


def test_taming_yaml_becomes_our_config(tmp_path):
    (tmp_path / "model.yaml").write_text(TAMING_YAML)
    config = taming_to_vq_config(load_taming_config(tmp_path / "model.yaml"))
    assert config["down_block_types"] == ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
    assert config["up_block_types"] == ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
    assert (config["block_out_channels"], config["latent_channels"], config["vq_embed_dim"]) == ([32, 64], 8, 4)
    assert (config["num_vq_embeddings"], config["layers_per_block"], config["legacy_beta"]) == (64, 1, False)
    gumbel = yaml.safe_load(TAMING_YAML)
    gumbel["model"]["target"] = "taming.models.vqgan.GumbelVQ"
    (tmp_path / "gumbel.yaml").write_text(yaml.safe_dump(gumbel))
    with pytest.raises(ValueError, match="GumbelVQ"):
        load_taming_config(tmp_path / "gumbel.yaml")


def test_taming_checkpoint_converts_back_to_identical_weights(taming_files):
    original, config, checkpoint = taming_files
    converted, loss = convert_taming_vqgan(checkpoint, config)
    assert set(loss) == {"discriminator.main.0.weight"}
    expected, actual = original.state_dict(), converted.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(converted.eval().tokenize(images), original.tokenize(images))
        assert (
            converted.detokenize(original.tokenize(images)) - original.detokenize(original.tokenize(images))
        ).abs().max() <= 1e-5


def test_unknown_or_missing_keys_are_errors(taming_files, tmp_path):
    original, config, _ = taming_files
    with pytest.raises(ValueError, match="not understood.*encoder.mystery"):
        convert_taming_vqgan(taming_checkpoint(original, tmp_path, {"encoder.mystery.weight": torch.zeros(1)}), config)
    state_dict, _ = taming_state_dict_to_vq(torch.load(taming_checkpoint(original, tmp_path))["state_dict"], 2)
    state_dict.pop("decoder.conv_out.bias")
    from vq_hub.conversion import _fill_from_fresh_model

    with pytest.raises(ValueError, match="lacks 1 weight.*decoder.conv_out.bias"):
        _fill_from_fresh_model(VQVAEModel(**original.config), state_dict, "test")


def test_a_checkpoint_without_its_codebook_is_refused(taming_files, tmp_path):
    """Only vq_hub's own statistics buffers may be absent; a missing codebook would leave a random one in place."""
    original, config, _ = taming_files
    checkpoint = torch.load(taming_checkpoint(original, tmp_path))
    del checkpoint["state_dict"]["quantize.embedding.weight"]
    torch.save(checkpoint, tmp_path / "no_codebook.ckpt")
    with pytest.raises(ValueError, match=r"lacks 1 weight.*quantize\.embedding\.weight"):
        convert_taming_vqgan(tmp_path / "no_codebook.ckpt", config)


def test_pickled_objects_are_refused_unless_allowed(taming_files, tmp_path):
    original, config, _ = taming_files
    checkpoint = taming_checkpoint(original, tmp_path, hyper_parameters=argparse.Namespace(lr=1e-4))
    with pytest.raises(ValueError, match="weights_only=True.*allow_pickle"):
        convert_taming_vqgan(checkpoint, config)
    converted, _ = convert_taming_vqgan(checkpoint, config, allow_pickle=True)
    assert torch.equal(converted.quantize.embedding.weight, original.quantize.embedding.weight)


# ------------------------------------------------------------------------------------------------- scripts


@pytest.mark.slow
def test_conversion_scripts_write_tokenizers_the_priors_can_use(diffusers_folder, taming_files, synthetic_parquet,
                                                                tmp_path):  # fmt: skip
    original, config, checkpoint = taming_files
    for command in (
        ["conversion/convert_diffusers_vqmodel.py", "--src", str(diffusers_folder), "--dst", str(tmp_path / "a")],
        ["conversion/convert_taming_vqgan.py", "--ckpt", str(checkpoint), "--config", str(config),
         "--dst", str(tmp_path / "b"), "--legacy_beta", "--save_discriminator"],
    ):  # fmt: skip
        subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:]], check=True, capture_output=True)
    assert VQVAEModel.from_pretrained(tmp_path / "b").config.legacy_beta is True
    assert json.loads((tmp_path / "b" / "conversion.json").read_text())["converted_from"].endswith("last.ckpt")
    assert (tmp_path / "b" / "taming_loss.safetensors").is_file()

    # A converted tokenizer encodes a dataset for the priors exactly like a native one.
    subprocess.run([sys.executable, str(ROOT / "examples" / "encode_dataset.py"), "--vqvae_name_or_path",
                    str(tmp_path / "a"), "--train_parquet", str(synthetic_parquet / "train.parquet"),
                    "--output_dir", str(tmp_path / "codes")], check=True, capture_output=True)  # fmt: skip
    info = json.loads((tmp_path / "codes" / "encoding.json").read_text())
    assert info["codebook_size"] == 64 and info["code_grid_size"] == [8, 8]
