"""VQ-VAE-2 through the scripts and the command line: train_vqgan.py --hierarchical, encode_dataset.py with both levels,
a prior's view of one level, and `vq-hub tokenize / detokenize / reconstruct / info` with a two-level tokenizer."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TWO_PROCESS_LAUNCHER, run_script
from PIL import Image
from test_hierarchical_vq_model import tiny_hierarchical_config

from vq_hub import HierarchicalVQModel, load_tokenizer
from vq_hub.cli import main
from vq_hub.data import image_to_tensor, load_code_dataset, load_parquet_images

TINY_HIERARCHICAL = [
    "--hierarchical", "--resolution", "16", "--block_out_channels", "16", "32", "--latent_channels", "8",
    "--top_block_out_channels", "16", "16", "--top_latent_channels", "4", "--norm_num_groups", "8",
    "--num_vq_embeddings", "32", "--top_num_vq_embeddings", "16", "--vqvae", "--train_batch_size", "8",
    "--eval_batch_size", "16", "--report_to", "none", "--lr_warmup_steps", "0",
]  # fmt: skip


def data_args(folder: Path) -> list[str]:
    return ["--train_parquet", str(folder / "train.parquet"), "--validation_parquet", str(folder / "test.parquet")]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vqvae2") / "tokenizer"
    torch.manual_seed(0)
    HierarchicalVQModel(**tiny_hierarchical_config()).save_pretrained(folder)
    return folder


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------------- train_vqgan.py


@pytest.mark.slow
def test_training_a_two_level_tokenizer_logs_each_level_and_saves_it(synthetic_parquet, tmp_path):
    output = tmp_path / "run"
    run_script("train_vqgan.py", data_args(synthetic_parquet) + TINY_HIERARCHICAL + [
        "--output_dir", str(output), "--max_train_steps", "40", "--learning_rate", "2e-3", "--log_steps", "10",
        "--validation_steps", "40", "--checkpointing_steps", "1000", "--kmeans_init", "--dead_code_threshold", "0.05",
        "--bottom_dropout", "0.2", "--mixed_precision", "bf16",  # bf16 autocast, as on a GPU (crashed at step 0)
    ])  # fmt: skip
    summary = json.loads((output / "training_summary.json").read_text())
    first, last = summary["history"][0], summary["history"][-1]
    assert summary["args"]["mixed_precision"] == "bf16"
    for level in ("top", "bottom"):
        for name in ("codebook_loss", "commitment_loss", "perplexity", "codebook_usage", "dead_code_restarts"):
            assert f"{level}_{name}" in last, f"{level}_{name} is logged"
        assert 0 < summary["validation"][f"{level}_codebook_usage"] <= 1
        assert summary["validation"][f"{level}_perplexity"] >= 1
    assert last["reconstruction_loss"] < 0.6 * first["reconstruction_loss"]
    assert summary["validation"]["psnr"] > summary["validation"]["top_only_psnr"] > 5
    model = load_tokenizer(output)
    assert type(model) is HierarchicalVQModel and model.config.bottom_dropout == 0.2
    assert [tuple(c.shape) for c in model.tokenize(torch.zeros(1, 3, 16, 16))] == [(1, 4, 4), (1, 8, 8)]
    for level in ("top", "bottom"):  # the codebook page of each level (once none: it drew one codebook only)
        assert (output / "validation" / f"codebook-{level}.png").is_file()
    with Image.open(output / "validation" / "step-0000040.png") as grid:
        assert grid.size[1] == 3 * 18 + 2, "originals, reconstructions and top-only decodes"
    card = (output / "README.md").read_text()
    assert "HierarchicalVQModel.from_pretrained" in card and "4×4 grid of top codes" in card


@pytest.mark.slow
def test_a_two_level_run_resumes_bit_for_bit_and_trains_on_two_processes(synthetic_parquet, tmp_path):
    common = data_args(synthetic_parquet) + TINY_HIERARCHICAL + [
        "--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "1000", "--use_ema",
        "--kmeans_init", "--dead_code_threshold", "0.3", "--bottom_dropout", "0.3", "--learning_rate", "1e-3",
    ]  # fmt: skip
    run_script("train_vqgan.py", common + ["--output_dir", str(tmp_path / "full")])
    # The step-2 checkpoint of the same run (a run with --max_train_steps 2 would have another learning-rate schedule).
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    run_script("train_vqgan.py", common + ["--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint",
                                           "latest"])  # fmt: skip
    full, resumed = load_tokenizer(tmp_path / "full").state_dict(), load_tokenizer(tmp_path / "resumed").state_dict()
    assert [key for key, value in full.items() if not torch.equal(value, resumed[key])] == []

    result = run_script("train_vqgan.py", common + ["--output_dir", str(tmp_path / "ddp")],
                        launcher=TWO_PROCESS_LAUNCHER, env={"ACCELERATE_USE_CPU": "1"})  # fmt: skip
    assert "[rank 1/2] started" in result.stdout + result.stderr
    summary = json.loads((tmp_path / "ddp" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["validation"]["num_images"] == 16
    assert "top_codebook_usage" in summary["history"][-1]


# ------------------------------------------------------------------------------------------------- encode_dataset.py


@pytest.mark.slow
def test_encoding_writes_both_levels_and_priors_read_their_level(tokenizer_folder, synthetic_parquet, tmp_path):
    run_script("encode_dataset.py", [
        "--vqvae_name_or_path", str(tokenizer_folder), "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--batch_size", "10", "--output_dir", str(tmp_path / "codes"),
    ])  # fmt: skip
    info = json.loads((tmp_path / "codes" / "encoding.json").read_text())
    assert info["levels"] == ["top", "bottom"] and "codebook_size" not in info
    assert info["code_grid_sizes"] == {"top": [4, 4], "bottom": [8, 8]}
    assert info["codebook_sizes"] == {"top": 16, "bottom": 32}
    table = pq.read_table(tmp_path / "codes" / "train.parquet")
    assert table.column_names == ["top_codes", "bottom_codes", "label"]

    model = HierarchicalVQModel.from_pretrained(tokenizer_folder).eval()
    images = load_parquet_images(synthetic_parquet / "train.parquet")
    batch = torch.stack([image_to_tensor(images[i]["image"], 16) for i in range(5)])
    top, bottom = model.tokenize(batch)
    assert np.array_equal(np.stack(table.column("top_codes").to_pylist()[:5]), top.flatten(1).numpy())
    assert np.array_equal(np.stack(table.column("bottom_codes").to_pylist()[:5]), bottom.flatten(1).numpy())

    top_view, top_info = load_code_dataset(tmp_path / "codes", level="top")
    assert top_view.column_names == ["codes", "label"] and top_info["code_grid_size"] == [4, 4]
    assert top_info["codebook_size"] == 16 and "prefix_length" not in top_info
    assert torch.equal(top_view[:5]["codes"], top.flatten(1))
    bottom_view, bottom_info = load_code_dataset(tmp_path / "codes", level="bottom")
    assert set(bottom_view.column_names) == {"codes", "prefix_ids", "label"}
    assert (bottom_info["codebook_size"], bottom_info["prefix_vocab_size"], bottom_info["prefix_length"]) == (
        32,
        16,
        16,
    )
    assert torch.equal(bottom_view[:5]["codes"], bottom.flatten(1))
    assert torch.equal(bottom_view[:5]["prefix_ids"], top.flatten(1)), "the bottom prior's prefix is the top grid"
    with pytest.raises(ValueError, match="choose one with `level`"):
        load_code_dataset(tmp_path / "codes")


# ------------------------------------------------------------------------------------------------- vq-hub


def test_cli_tokenizes_to_one_array_per_level_and_back(capsys, tokenizer_folder, synthetic_parquet, tmp_path):
    images = str(synthetic_parquet / "test.parquet")
    code, out, _ = cli(capsys, "tokenize", "--model", str(tokenizer_folder), "--images", images, "--num-images", "5",
                       "--out", str(tmp_path / "codes"))  # fmt: skip
    assert code == 0 and "top codes of shape (5, 4, 4)" in out and "bottom codes of shape (5, 8, 8)" in out
    with np.load(tmp_path / "codes") as archive:  # exactly at --out, an .npz archive
        assert sorted(archive.files) == ["bottom", "top"] and archive["bottom"].shape == (5, 8, 8)
        top, bottom = archive["top"], archive["bottom"]
    code, out, _ = cli(capsys, "detokenize", "--model", str(tokenizer_folder), "--codes", str(tmp_path / "codes"),
                       "--out", str(tmp_path / "decoded.png"))  # fmt: skip
    assert code == 0 and "5 images of 16×16" in out
    model = load_tokenizer(tokenizer_folder)
    with torch.no_grad():
        expected = model.detokenize((torch.from_numpy(top).long(), torch.from_numpy(bottom).long()))
    with Image.open(tmp_path / "decoded.png") as grid:
        first = np.asarray(grid.convert("RGB"))[2:18, 2:18].astype(np.float32) / 127.5 - 1
    assert np.abs(first - expected[0].clamp(-1, 1).permute(1, 2, 0).numpy()).max() < 0.01

    code, out, _ = cli(capsys, "reconstruct", "--model", str(tokenizer_folder), "--images", images, "--num-images",
                       "3", "--out", str(tmp_path / "r.png"))  # fmt: skip
    assert code == 0 and "PSNR" in out
    with Image.open(tmp_path / "r.png") as grid:
        assert grid.size == (3 * 18 + 2, 3 * 18 + 2), "originals, top-only decodes, reconstructions"

    code, out, _ = cli(capsys, "info", str(tokenizer_folder))
    assert code == 0 and "HierarchicalVQModel (two levels" in out
    assert "codes top 4×4 of 16, bottom 8×8 of 32" in out


def test_cli_refuses_codes_of_the_wrong_kind(capsys, tokenizer_folder, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((2, 8, 8), dtype=np.int16))
    np.savez(tmp_path / "mismatch.npz", top=np.zeros((2, 4, 4), dtype=np.int16), bottom=np.zeros((2, 4, 4), np.int16))
    np.savez(tmp_path / "range.npz", top=np.full((1, 4, 4), 16), bottom=np.zeros((1, 8, 8), dtype=np.int16))
    cases = [
        ("one.npy", "a two-level tokenizer needs a .npz archive with arrays ['top', 'bottom']"),
        ("mismatch.npz", "the bottom grid must be 2× the top grid"),
        ("range.npz", r"(top): values must lie in [0, 15]"),
    ]
    for name, message in cases:
        code, _, err = cli(capsys, "detokenize", "--model", str(tokenizer_folder), "--codes", str(tmp_path / name))
        assert code == 1 and message in err, err


# ------------------------------------------------------------------------------------------------- the priors


TINY_PRIOR = [
    "--hidden_size", "32", "--num_layers", "1", "--num_heads", "2", "--train_batch_size", "8", "--report_to", "none",
    "--lr_warmup_steps", "0", "--images_per_class", "2", "--max_train_steps", "8", "--validation_steps", "8",
    "--checkpointing_steps", "100", "--learning_rate", "3e-3",
]  # fmt: skip


@pytest.mark.slow
def test_the_prior_scripts_train_the_top_then_the_bottom_into_one_pipeline(tokenizer_folder, synthetic_parquet,
                                                                           tmp_path):  # fmt: skip
    from vq_hub import VQHierarchicalPipeline, VQPipeline

    codes = tmp_path / "codes"
    run_script("encode_dataset.py", [
        "--vqvae_name_or_path", str(tokenizer_folder), "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--validation_parquet", str(synthetic_parquet / "test.parquet"), "--batch_size", "16", "--output_dir", str(codes),
    ])  # fmt: skip
    refused = run_script(
        "train_prior.py", ["--codes_dir", str(codes), "--output_dir", str(tmp_path / "x")], check=False
    )
    assert refused.returncode != 0 and "choose one with `level` (--level in the prior scripts)" in refused.stderr
    refused = run_script("train_diffusion.py", ["--codes_dir", str(codes), "--level", "top", "--output_dir",
                                                str(tmp_path / "x")], check=False)  # fmt: skip
    assert refused.returncode != 0 and "train it with train_prior.py --level top" in refused.stderr

    run_script("train_prior.py", ["--codes_dir", str(codes), "--level", "top", "--output_dir", str(tmp_path / "top"),
                                  *TINY_PRIOR])  # fmt: skip
    top_only = VQPipeline.from_pretrained(tmp_path / "top")
    assert type(top_only) is VQHierarchicalPipeline and top_only.bottom_prior is None
    assert (tmp_path / "top" / "samples" / "step-0000008.png").is_file(), "a grid of top-only decodes"

    for script, extra in [("train_prior.py", []), ("train_diffusion.py", ["--num_steps", "4"])]:
        output = tmp_path / script.replace(".py", "")
        run_script(script, ["--codes_dir", str(codes), "--level", "bottom", "--top_prior_name_or_path",
                            str(tmp_path / "top"), "--output_dir", str(output), *TINY_PRIOR, *extra])  # fmt: skip
        summary = json.loads((output / "training_summary.json").read_text())
        assert summary["args"]["prompt_dropout"] == 0.0, "the top codes are always known: no prefix dropout"
        assert summary["validation"]["num_examples"] == 16
        pipe = VQPipeline.from_pretrained(output)
        assert type(pipe) is VQHierarchicalPipeline and pipe.bottom_prior is not None
        assert pipe.bottom_is_denoiser == (script == "train_diffusion.py")
        for name in ("vqvae", "top_prior"):
            expected, actual = getattr(top_only, name).state_dict(), getattr(pipe, name).state_dict()
            assert all(torch.equal(expected[key], actual[key]) for key in expected), f"the top run's {name} is kept"
        pipe.set_progress_bar_config(disable=True)
        kwargs = {"num_steps": 4} if pipe.bottom_is_denoiser else {}
        images = pipe(class_labels=[0, 2], generator=torch.Generator().manual_seed(0), **kwargs).images
        assert [image.size for image in images] == [(16, 16), (16, 16)]


def test_cli_generates_with_a_two_level_pipeline_and_describes_it(capsys, tmp_path):
    from test_hierarchical_pipeline import tiny_pipeline

    tiny_pipeline("denoiser").save_pretrained(tmp_path / "pipe")
    code, out, _ = cli(capsys, "generate", "--model", str(tmp_path / "pipe"), "--num-steps", "2", "--class", "0", "2",
                       "--num-images", "3", "--top-k", "5", "--no-labels",
                       "--out", str(tmp_path / "grid.png"))  # fmt: skip
    assert code == 0, out
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (3 * 18 + 2, 2 * 18 + 2)
    code, out, _ = cli(capsys, "info", str(tmp_path / "pipe"))
    assert code == 0 and "pipeline: VQHierarchicalPipeline" in out and "bottom prior: BertForMaskedLM" in out
    assert "scheduler: mask corruption" in out and "codes top 4×4 of 16, bottom 8×8 of 32" in out
