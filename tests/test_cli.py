"""The `vq-hub` command on the shipped checkpoints: every subcommand, its help and its one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, put_in_hub_cache
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
    # Three Fashion-MNIST models (18 MB), the two-level pipeline (14 MB), the text-to-image pipeline (8 MB) and the feature
    # networks of vq_hub.evaluation (1.5–2.3 MB each): a guard against a checkpoint that grows by accident.
    assert sum(p.stat().st_size for p in CHECKPOINTS.rglob("*") if p.is_file()) <= 52 * 2**20
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
                       "--num-images", "3", "--no-labels", *outputs)  # fmt: skip
    assert code == 0 and out.strip().startswith(f"wrote {tmp_path / 'd.png'} and {tmp_path / 'd.gif'}: 2 row(s)")
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
        (["tokenize", "--model", TOKENIZER, "--images", "nothing.txt"], "--images nothing.txt: no such file"),
        (["tokenize", "--model", TOKENIZER, "--images", "test.parquet"], "--images test.parquet: no such file"),
        (["compress", "x.parquet", "--model", AUTOREGRESSIVE, "--out", "x.vqz"], "IMAGES x.parquet: no such file"),
        (["info", str(CHECKPOINTS / "fashion-mnist-vqvea")], "no such folder; did you mean"),
        (["detokenize", "--model", TOKENIZER, "--codes", "missing.npy"], "--codes missing.npy: no such file"),
        (["info", "nowhere"], "'nowhere': no such folder"),
        (["generate", "--model", DIFFUSION, "--device", "gpu0"], "--device gpu0: expected cpu, cuda, cuda:N or auto"),
    ],
)
def test_errors_are_one_line_with_a_nonzero_exit(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"vq-hub {argv[0]}: error:") and message in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", DIFFUSION, "--num-images", "0"], "argument --num-images: expected a positive integer"),
        (["tokenize", "--model", TOKENIZER, "--images", "x", "--num-images", "-1"], "--num-images: expected a positive"),
        (["generate", "--model", DIFFUSION, "--temperature", "nan"], "--temperature: expected a finite number"),
        (["generate", "--model", DIFFUSION, "--guidance-scale", "inf"], "--guidance-scale: expected a finite"),
        (["generate", "--model", DIFFUSION, "--top-k", "5"], "--top-k applies to autoregressive pipelines"),
        (["generate", "--model", DIFFUSION, "--out", "grid.txt"], "--out grid.txt: give an image file name"),
    ],
)
def test_bad_flags_are_named_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(1)  # errors found after parsing return 1 instead of raising
    captured = capsys.readouterr()
    assert exit_info.value.code != 0
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err


def test_every_flag_shows_help_and_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = capsys.readouterr().out.split("options:", 1)[1]
    for flag, default in [("--guidance-scale", "2.0"), ("--temperature", "1.0"), ("--seed", "0"), ("--num-images", "8")]:
        section = help_text.split(flag, 1)[1].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(section.split()), section


def test_outputs_are_written_exactly_where_asked(capsys, tmp_path):
    images = str(shipped_fashion_mnist())
    code, out, _ = run(capsys, "tokenize", "--model", TOKENIZER, "--images", images, "--num-images", "10", "--out",
                       str(tmp_path / "c"))  # fmt: skip
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'c'}:") and sorted(os.listdir(tmp_path)) == ["c"]
    codes = np.load(tmp_path / "c")
    assert codes.shape == (10, 8, 8)
    code, out, _ = run(capsys, "detokenize", "--model", TOKENIZER, "--codes", str(tmp_path / "c"), "--out",
                       str(tmp_path / "d.png"))  # fmt: skip
    with Image.open(tmp_path / "d.png") as grid:
        assert grid.size == (4 * 34 + 2, 3 * 34 + 2), "10 images in a square-ish grid: 4 columns, 3 rows"


def test_images_are_drawn_across_classes_and_colour_conversion_is_said(capsys, tmp_path):
    from vq_hub.cli._common import read_images

    _, labels = read_images(str(shipped_fashion_mnist()), 10, seed=0)
    assert sorted(labels) == list(range(10)), "the mini file is sorted by class; a draw of 10 shows every class"
    for index in range(3):
        Image.new("RGB", (28, 28), (200, 30, 30)).save(tmp_path / f"{index}.png")
    code, _, err = run(capsys, "reconstruct", "--model", TOKENIZER, "--images", str(tmp_path), "--out",
                       str(tmp_path / "r.png"))  # fmt: skip
    assert code == 0 and "note: converted 3 colour image(s) from --images to grayscale" in err


def test_a_truncated_weights_file_names_its_cause(capsys, tmp_path):
    import shutil

    shutil.copytree(TOKENIZER, tmp_path / "tokenizer")
    weights = tmp_path / "tokenizer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5000])
    code, _, err = run(capsys, "info", str(tmp_path / "tokenizer"))
    assert code == 1 and err.count("\n") == 1
    assert "diffusion_pytorch_model.safetensors: the weights file is damaged or truncated" in err
    assert err.count("diffusion_pytorch_model.safetensors") == 1


def test_every_model_flag_takes_a_hub_id(capsys, tmp_path, offline_hub_cache):
    put_in_hub_cache(Path(TOKENIZER), "vq-hub/fashion-vqvae", offline_hub_cache)
    put_in_hub_cache(Path(DIFFUSION), "vq-hub/fashion-diffusion", offline_hub_cache)
    images = str(shipped_fashion_mnist())
    code, out, err = run(capsys, "reconstruct", "--model", "vq-hub/fashion-vqvae", "--images", images,
                         "--num-images", "2", "--out", str(tmp_path / "r.png"))  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "info", "vq-hub/fashion-diffusion")
    assert code == 0 and "VQDiscreteDiffusionPipeline" in out, err


def test_out_of_range_codes_and_debug_traceback(capsys, tmp_path):
    np.save(tmp_path / "bad.npy", np.full((1, 8, 8), 300, dtype=np.int16))
    code, _, err = run(capsys, "detokenize", "--model", TOKENIZER, "--codes", str(tmp_path / "bad.npy"))
    assert code != 0 and "values must lie in [0, 255]" in err
    with pytest.raises(Exception, match="no such folder"):
        main(["--debug", "info", str(tmp_path / "nowhere")])


def test_every_subcommand_has_help():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert set(subcommands) == {"generate", "reconstruct", "tokenize", "detokenize", "compress", "decompress",
                                "evaluate", "codebook", "info", "convert", "demo"}
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


def command_script(tmp_path: Path) -> Path:
    """What pip writes for the `vq-hub` entry point (vq_hub.cli:main), under the same name."""
    script = tmp_path / "vq-hub"
    script.write_text("import sys\nfrom vq_hub.cli import main\nsys.exit(main())\n")
    return script


def test_help_and_argument_errors_answer_at_once_without_torch(tmp_path):
    """Every command once spent ~5 s importing torch and diffusers before answering (`--help` 5.4 s): launched as
    `vq-hub`, the package imports nothing heavy until a subcommand needs it."""
    import time

    script = command_script(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
             "try: runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit: pass\n"
             "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", probe, str(script)], capture_output=True, text=True, env=env,
                            timeout=120)  # fmt: skip
    assert loaded.stdout.strip().splitlines()[-1] == "[]", loaded.stdout + loaded.stderr
    seconds = []
    for argv in (["--help"], ["evaluate", "--help"], ["generate", "--model", "x", "--num-images", "0"]):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, env=env,
                                timeout=120)  # fmt: skip
        seconds.append(time.perf_counter() - start)
        assert result.returncode == (2 if "0" in argv else 0), result.stderr
    assert max(seconds) < 1.0, seconds
    result = subprocess.run([sys.executable, str(script), "info", TOKENIZER], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0 and "codebook size: 256" in result.stdout, result.stderr  # names load on first use


def test_one_image_file_is_taken_and_a_mistyped_local_path_is_said_before_any_network(capsys, tmp_path,
                                                                                     monkeypatch):  # fmt: skip
    Image.new("L", (28, 28), 200).save(tmp_path / "one.png")
    code, out, err = run(capsys, "reconstruct", "--model", TOKENIZER, "--images", str(tmp_path / "one.png"),
                         "--out", str(tmp_path / "r.png"))  # fmt: skip
    assert code == 0 and "1 images" in out, err
    monkeypatch.chdir(ROOT)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("tried the Hub"))
    code, out, err = run(capsys, "info", "checkpoints/fashion-mnist-vqvea")
    assert code == 1 and "'checkpoints/fashion-mnist-vqvea': no such folder; did you mean " \
        "'checkpoints/fashion-mnist-vqvae'?" in err, err  # fmt: skip
    code, out, err = run(capsys, "reconstruct", "--model", TOKENIZER, "--num-images", "3", "--out",
                         str(tmp_path / "d.png"))  # the shipped images by default
    assert code == 0 and "3 images" in out, err


def test_classes_by_name_row_labels_and_what_num_images_counts(capsys, tmp_path):
    """`--class sneaker` failed while the demo took class names; grids had no row labels; --num-images did not say
    whether it counts per class."""
    code, out, err = run(capsys, "generate", "--model", DIFFUSION, "--class", "sneaker", "Trousers", "0",
                         "--num-images", "2", "--num-steps", "2", "--out", str(tmp_path / "g.png"))  # fmt: skip
    assert code == 0, err
    assert out.strip().endswith(": 3 row(s) (Sneaker, Trouser, T-shirt/top), 2 images per class"), out
    code, out, err = run(capsys, "generate", "--model", DIFFUSION, "--class", "7", "1", "0", "--num-images", "2",
                         "--num-steps", "2", "--no-labels", "--out", str(tmp_path / "plain.png"))  # fmt: skip
    assert code == 0, err
    with Image.open(tmp_path / "g.png") as labelled, Image.open(tmp_path / "plain.png") as plain:
        margin = labelled.width - plain.width
        assert labelled.height == plain.height and margin > 20  # a left margin that names the rows
        assert np.array_equal(np.asarray(labelled)[:, margin:], np.asarray(plain))  # the same samples beside it
        assert np.asarray(labelled)[:, :margin].max() > 128  # white text
    code, out, err = run(capsys, "generate", "--model", DIFFUSION, "--class", "shoe", "--out", str(tmp_path / "x.png"))
    assert code == 1 and "--class shoe: not a class of this prior (0 T-shirt/top, 1 Trouser" in err
    code, out, err = run(capsys, "info", DIFFUSION)
    assert "class names: 0 T-shirt/top, 1 Trouser" in out
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "per class (class-conditional), per prompt" in " ".join(capsys.readouterr().out.split())


def test_the_text_vocabulary_is_listed_and_a_prompt_of_mostly_unknown_words_is_refused(capsys, tmp_path):
    text = str(CHECKPOINTS / "scenes-text-to-image")
    code, out, err = run(capsys, "info", text)
    assert code == 0 and "vocabulary (22 words): the a on right left and red" in out, err
    assert "## Vocabulary" in (CHECKPOINTS / "scenes-text-to-image" / "README.md").read_text()
    code, out, err = run(capsys, "generate", "--model", text, "--prompt", "a purple shoe on the left", "--num-steps",
                         "2", "--out", str(tmp_path / "p.png"))  # fmt: skip
    assert code == 1 and "2 of its 6 words are unknown" in err and "it knows: the, a, on, right" in err, err
    code, out, err = run(capsys, "generate", "--model", text, "--prompt", "a red sneaker on the left", "--num-steps",
                         "2", "--num-images", "1", "--out", str(tmp_path / "t.png"))  # fmt: skip
    assert code == 0 and "1 row(s), one per prompt, 1 images per prompt" in out, err


def test_device_flag_places_the_pipeline_and_turns_on_cuda_graphs_only_on_cuda(monkeypatch):
    from vq_hub.cli import _common

    pipe = VQPipeline.from_pretrained(AUTOREGRESSIVE)
    assert _common.place_pipeline(pipe, "auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pipe.cuda_graphs is torch.cuda.is_available()
    assert _common.place_pipeline(pipe, "cpu").device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(_common.CommandError, match="--device cuda: this machine has no CUDA device"):
            _common.place_pipeline(pipe, "cuda")


@pytest.mark.gpu
def test_generate_samples_on_cuda_with_the_recorded_step(capsys, tmp_path):
    code, out, err = run(capsys, "generate", "--model", AUTOREGRESSIVE, "--num-images", "2", "--device", "cuda",
                         "--out", str(tmp_path / "cuda.png"))  # fmt: skip
    assert code == 0 and (tmp_path / "cuda.png").is_file(), err
