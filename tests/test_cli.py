"""The `vq-hub` command on the shipped checkpoints: every subcommand, its help and its one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from vq_hub import VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel, VQPipeline
from vq_hub.cli import build_parser, main
from vq_hub.data import shipped_fashion_mnist

CHECKPOINTS = ROOT / "checkpoints"
TOKENIZER = str(CHECKPOINTS / "fashion-mnist-vqvae")
AUTOREGRESSIVE = str(CHECKPOINTS / "fashion-mnist-autoregressive")
DIFFUSION = str(CHECKPOINTS / "fashion-mnist-diffusion")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_shipped_checkpoints_load_and_generate_32px_images():
    # Three Fashion-MNIST models (18 MB) and the two feature networks of vq_hub.evaluation (1.5 MB each).
    assert sum(p.stat().st_size for p in CHECKPOINTS.rglob("*") if p.is_file()) <= 24 * 2**20
    assert VQVAEModel.from_pretrained(TOKENIZER).config.sample_size == 32
    for path, cls, kwargs in [(AUTOREGRESSIVE, VQAutoregressivePipeline, {}),
                              (DIFFUSION, VQDiscreteDiffusionPipeline, {"num_steps": 4})]:  # fmt: skip
        pipe = VQPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe) is cls
        images = pipe(class_labels=[0, 9], generator=torch.Generator().manual_seed(0), **kwargs).images
        assert [image.size for image in images] == [(32, 32), (32, 32)] and images[0].mode == "L"
        card = (CHECKPOINTS / path / "README.md").read_text()
        assert "2 CPU cores" in card and "steps" in card and "| loss |" in card


def test_generate_writes_grids_for_both_pipelines(capsys, tmp_path):
    outputs = ["--out", str(tmp_path / "d.png"), "--gif", str(tmp_path / "d.gif")]
    code, out, _ = run(capsys, "generate", "--model", DIFFUSION, "--num-steps", "4", "--class", "0", "7",
                       "--num-images", "3", *outputs)  # fmt: skip
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'd.png'} and {tmp_path / 'd.gif'}"
    with Image.open(tmp_path / "d.png") as grid:
        assert grid.size == (3 * 34 + 2, 2 * 34 + 2)  # 3 images per class, 2 classes, 32 px + 2 px padding
    with Image.open(tmp_path / "d.gif") as gif:
        assert gif.n_frames == 4
    code, out, _ = run(capsys, "generate", "--model", AUTOREGRESSIVE, "--class", "5", "--num-images", "2", "--out",
                       str(tmp_path / "a.png"))  # fmt: skip
    assert code == 0 and (tmp_path / "a.png").is_file()


def test_reconstruct_tokenize_detokenize_round_trip(capsys, tmp_path):
    images = str(shipped_fashion_mnist())
    code, out, _ = run(capsys, "reconstruct", "--model", TOKENIZER, "--images", images, "--num-images", "4",
                       "--out", str(tmp_path / "r.png"))  # fmt: skip
    assert code == 0 and float(out.split("PSNR ")[1].split(" dB")[0]) > 20
    code, out, _ = run(
        capsys,
        "tokenize",
        "--model",
        AUTOREGRESSIVE,
        "--images",
        images,
        "--num-images",
        "4",
        "--out",
        str(tmp_path / "codes.npy"),
    )  # a pipeline folder works: its tokenizer is used
    codes = np.load(tmp_path / "codes.npy")
    assert code == 0 and codes.shape == (4, 8, 8) and codes.dtype == np.int16 and codes.max() < 256
    code, out, _ = run(capsys, "detokenize", "--model", TOKENIZER, "--codes", str(tmp_path / "codes.npy"), "--out",
                       str(tmp_path / "decoded.png"))  # fmt: skip
    assert code == 0 and "4 images of 32×32" in out


def test_info_describes_tokenizers_and_pipelines(capsys):
    code, out, _ = run(capsys, "info", TOKENIZER)
    assert code == 0 and "codebook size: 256" in out and "codes 8×8" in out and "psnr 27.25" in out
    code, out, _ = run(capsys, "info", DIFFUSION)
    assert (
        code == 0 and "VQDiscreteDiffusionPipeline" in out and "mask corruption, 100 timesteps" in out and "classes: 10" in out
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "missing-folder/x/y"], "missing-folder/x/y"),
        (["generate", "--model", TOKENIZER], "not a saved pipeline"),
        (["generate", "--model", AUTOREGRESSIVE, "--num-steps", "8"], "--num-steps applies to diffusion pipelines"),
        (["generate", "--model", AUTOREGRESSIVE, "--gif", "x.gif"], "--gif"),
        (["generate", "--model", DIFFUSION, "--class", "10"], r"--class 10: labels of this prior lie in [0, 9]"),
        (["generate", "--model", DIFFUSION, "--num-steps", "500"], "num_steps` must be an integer in [1, 100]"),
        (["reconstruct", "--model", "nowhere", "--images", "x"], "`--model` 'nowhere': no such folder"),
        (["reconstruct", "--model", "./no_such_dir", "--images", "x"], "`--model` './no_such_dir': no such folder"),
        (["info", "owner/not-cached"], "could not be fetched or found in the cache"),
        (["tokenize", "--model", TOKENIZER, "--images", "nothing.txt"], "a folder of images or a .parquet file"),
        (["detokenize", "--model", TOKENIZER, "--codes", "missing.npy"], "--codes missing.npy: no such file"),
        (["info", "nowhere"], "'nowhere': no such folder"),
    ],
)
def test_errors_are_one_line_with_a_nonzero_exit(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"vq-hub {argv[0]}: error:") and message in err, err


def test_out_of_range_codes_and_debug_traceback(capsys, tmp_path):
    np.save(tmp_path / "bad.npy", np.full((1, 8, 8), 300, dtype=np.int16))
    code, _, err = run(capsys, "detokenize", "--model", TOKENIZER, "--codes", str(tmp_path / "bad.npy"))
    assert code != 0 and "values must lie in [0, 255]" in err
    with pytest.raises(Exception, match="no such folder"):
        main(["--debug", "info", str(tmp_path / "nowhere")])


def test_every_subcommand_has_help():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert set(subcommands) == {"generate", "reconstruct", "tokenize", "detokenize", "info"}
    for name in subcommands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0


@pytest.mark.slow
def test_console_script_is_installed():
    """`pip install` puts `vq-hub` beside the interpreter (the entry point in pyproject.toml)."""
    script = Path(sys.executable).parent / "vq-hub"
    assert script.is_file(), "reinstall the package: pip install -e ."
    result = subprocess.run([str(script), "info", TOKENIZER], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "codebook size: 256" in result.stdout
