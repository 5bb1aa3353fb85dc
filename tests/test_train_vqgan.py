"""examples/train_vqgan.py end to end, as users launch it (subprocesses; tiny model, synthetic images)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TWO_PROCESS_LAUNCHER, CapturingHfApi, files_containing, load_example, run_script

from vq_hub import PatchDiscriminator, VQVAEModel

TINY_MODEL = [
    "--resolution", "16", "--block_out_channels", "16", "32", "--latent_channels", "4", "--norm_num_groups", "8",
    "--num_vq_embeddings", "32", "--discriminator_channels", "8", "--discriminator_layers", "1",
    "--train_batch_size", "8", "--eval_batch_size", "16", "--report_to", "none", "--lr_warmup_steps", "0",
]  # fmt: skip


def run_training(args: list[str], launcher: list[str] | None = None, check: bool = True, env: dict | None = None):
    return run_script("train_vqgan.py", args, launcher, check, env)


def data_args(folder: Path) -> list[str]:
    return ["--train_parquet", str(folder / "train.parquet"), "--validation_parquet", str(folder / "test.parquet")]


@pytest.mark.slow
def test_training_reduces_reconstruction_loss_and_saves_loadable_models(synthetic_parquet, tmp_path):
    output = tmp_path / "run"
    run_training(data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "60", "--learning_rate", "2e-3", "--log_steps", "5",
        "--discriminator_start", "30", "--validation_steps", "30", "--checkpointing_steps", "1000",
        "--kmeans_init", "--dead_code_threshold", "0.05",
    ])  # fmt: skip
    summary = json.loads((output / "training_summary.json").read_text())
    losses = [entry["reconstruction_loss"] for entry in summary["history"]]
    assert summary["steps"] == 60 and [entry["step"] for entry in summary["history"]][:3] == [1, 5, 10]
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert summary["history"][-1]["adaptive_weight"] > 0, "the GAN should be on after --discriminator_start"
    assert summary["validation"]["num_images"] == 16 and summary["validation"]["psnr"] > 10

    model = VQVAEModel.from_pretrained(output)
    assert model.tokenize(torch.zeros(1, 3, 16, 16)).shape == (1, 8, 8)
    PatchDiscriminator.from_pretrained(output / "discriminator")
    assert sorted(p.name for p in (output / "validation").iterdir()) == [
        "codebook.png",
        "step-0000030.png",
        "step-0000060.png",
    ]
    assert "library_name: vq_hub" in (output / "README.md").read_text()


@pytest.mark.slow
def test_bf16_training_with_the_gan_saves_a_loadable_model(synthetic_parquet, tmp_path):
    """`--mixed_precision bf16` (what `accelerate launch --mixed_precision bf16` sets) crashed at step 0: accelerate
    rebuilds the model output to convert it to float32, and the output dataclass had required fields."""
    output = tmp_path / "bf16"
    run_training(data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "4", "--discriminator_start", "0", "--log_steps", "2",
        "--validation_steps", "4", "--checkpointing_steps", "2", "--mixed_precision", "bf16",
    ])  # fmt: skip
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 4 and summary["args"]["mixed_precision"] == "bf16"
    assert all(np.isfinite(entry["reconstruction_loss"]) for entry in summary["history"])
    assert summary["history"][-1]["adaptive_weight"] > 0, "the GAN ran under autocast"
    model = VQVAEModel.from_pretrained(output)
    assert model.dtype == torch.float32 and model.tokenize(torch.zeros(1, 3, 16, 16)).shape == (1, 8, 8)


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(synthetic_parquet, tmp_path):
    common = data_args(synthetic_parquet) + TINY_MODEL + [
        "--max_train_steps", "6", "--checkpointing_steps", "3", "--discriminator_start", "2", "--use_ema",
        "--random_flip", "--kmeans_init", "--dead_code_threshold", "0.3", "--gradient_accumulation_steps", "2",
        "--train_batch_size", "4", "--validation_steps", "1000", "--learning_rate", "1e-3",
    ]  # fmt: skip
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_training(common + ["--output_dir", str(uninterrupted)])
    assert [p.name for p in sorted(uninterrupted.glob("checkpoint-*"))] == ["checkpoint-3", "checkpoint-6"]

    resumed.mkdir()
    shutil.copytree(uninterrupted / "checkpoint-3", resumed / "checkpoint-3")
    result = run_training(common + ["--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    assert "resumed from" in result.stderr + result.stdout

    for name in ("diffusion_pytorch_model.safetensors", "discriminator/diffusion_pytorch_model.safetensors"):
        expected, actual = load_file(uninterrupted / name), load_file(resumed / name)
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}: {key} differs after resuming"
    assert json.loads((resumed / "training_summary.json").read_text())["steps"] == 6


@pytest.mark.slow
def test_non_finite_loss_stops_with_last_good_checkpoint_intact(synthetic_parquet, tmp_path):
    output = tmp_path / "diverging"
    result = run_training(data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "20", "--checkpointing_steps", "1", "--vqvae",
        "--learning_rate", "1e30", "--max_grad_norm", "1e30", "--lr_scheduler", "constant",
    ], check=False)  # fmt: skip
    assert result.returncode != 0
    assert "non-finite loss at step" in result.stderr
    checkpoints = sorted(output.glob("checkpoint-*"))
    assert checkpoints, "at least one checkpoint was written before the loss diverged"
    assert f"Last good checkpoint: {checkpoints[-1]}" in result.stderr
    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(value.float()).all() for value in weights.values())
    assert not list(output.glob(".checkpoint-*")), "no half-written checkpoint left behind"
    assert not (output / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.slow
def test_two_cpu_processes_train_one_model(synthetic_parquet, tmp_path):
    output = tmp_path / "ddp"
    result = run_training(
        data_args(synthetic_parquet) + TINY_MODEL + [
            "--output_dir", str(output), "--max_train_steps", "4", "--discriminator_start", "2", "--log_steps", "2",
            "--checkpointing_steps", "2", "--validation_steps", "4", "--kmeans_init", "--dead_code_threshold", "0.3",
        ],
        launcher=TWO_PROCESS_LAUNCHER,
        env={"ACCELERATE_USE_CPU": "1"},
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert "[rank 0/2] started" in log and "[rank 1/2] started" in log, log[-3000:]
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 4
    assert summary["validation"]["num_images"] == 16, "evaluation covers the whole split once, across both ranks"
    assert (output / "checkpoint-4" / "random_states_1.pkl").exists(), "each rank saved its RNG state"
    VQVAEModel.from_pretrained(output)


@pytest.mark.slow
def test_the_hub_token_reaches_no_file_that_is_written_or_uploaded(synthetic_parquet, tmp_path, monkeypatch):
    """The token authenticates the upload and nothing else: not the card's command, not training_summary.json, not
    the TensorBoard config."""
    import vq_hub.hub

    secret = "hf_NEVERwriteME0123456789"
    CapturingHfApi.root, CapturingHfApi.tokens = tmp_path / "uploaded", []
    monkeypatch.setattr(vq_hub.hub, "HfApi", CapturingHfApi)
    output = tmp_path / "run"
    load_example("train_vqgan").main(data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "2", "--checkpointing_steps", "2", "--vqvae",
        "--report_to", "tensorboard", "--push_to_hub", "--hub_model_id", "me/tiny", "--hub_token", secret,
    ])  # fmt: skip
    assert CapturingHfApi.tokens == [secret], "the token is still used to authenticate"
    assert (CapturingHfApi.root / "me--tiny" / "training_summary.json").is_file()
    assert list((output / "logs").rglob("events.out.tfevents*")), "the tracker wrote its config"
    assert files_containing(output, secret) == [] and files_containing(CapturingHfApi.root, secret) == []
    assert "--hub_token REDACTED" in (output / "README.md").read_text()


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing(synthetic_parquet, tmp_path):
    """It used to train one step past --max_train_steps and overwrite the saved model."""
    output = tmp_path / "run"
    common = data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "4", "--checkpointing_steps", "2", "--vqvae",
        "--validation_steps", "1000",
    ]  # fmt: skip
    run_training(common)
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and "logs" not in p.parts}
    result = run_training(common + ["--resume_from_checkpoint", "latest"])
    assert "nothing to train or save" in result.stdout + result.stderr
    after = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert after == before


NEW_QUANTIZER_FLAGS = {
    "lfq": ["--num_vq_embeddings", "256", "--entropy_loss_weight", "0.2", "--entropy_loss_weight_end", "0.05",
            "--entropy_loss_anneal_steps", "10", "--lfq_scale", "0.5"],
    "bsq": ["--num_vq_embeddings", "256", "--entropy_group_size", "4", "--entropy_temperature", "0.5"],
    "simvq": ["--num_vq_embeddings", "64", "--codebook_dim", "8"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("quantizer_type", NEW_QUANTIZER_FLAGS)
def test_each_new_quantizer_type_trains_from_its_flags_and_saves_a_loadable_model(
    quantizer_type, synthetic_parquet, tmp_path
):
    output = tmp_path / quantizer_type
    summary = load_example("train_vqgan").main(data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "3", "--vqvae", "--quantizer_type", quantizer_type,
        "--validation_steps", "3", "--checkpointing_steps", "1000", "--learning_rate", "1e-3",
        *NEW_QUANTIZER_FLAGS[quantizer_type],
    ])  # fmt: skip
    assert summary["steps"] == 3 and 0 < summary["validation"]["codebook_usage"] <= 1
    model = VQVAEModel.from_pretrained(output).eval()
    assert model.config.quantizer_type == quantizer_type
    if quantizer_type == "lfq":
        assert model.quantize.scale == 0.5 and model.quantize.entropy_weight.end == 0.05
        assert int(model.quantize.entropy_weight.step) == 3, "the anneal counted the 3 training steps"
    if quantizer_type == "bsq":
        assert model.quantize.entropy_group_size == 4 and model.quantize.entropy_temperature == 0.5
    if quantizer_type == "simvq":
        assert model.quantize.codebook_dim == 8
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    codes = model.tokenize(images)
    assert codes.shape == (2, 8, 8) and int(codes.max()) < model.codebook_size
    assert (output / "validation" / "codebook.png").is_file()
