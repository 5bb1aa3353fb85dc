"""The README runs as written: its Python blocks, its `vq-hub` commands, the main job (`make demo`), and its script
commands parse."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    # a block marked `<!-- not-run: reason -->` on the line above its fence (a download) is left out, as in the docs
    blocks = [m.group(2) for m in re.finditer(r"^(<!--\s*not-run:[^\n]*-->\n)?```python\n(.*?)^```$",
                                              (ROOT / "README.md").read_text(), flags=re.M | re.S) if not m.group(1)]
    assert blocks, "README.md should contain a Python quickstart"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")  # the README's relative paths
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "my-tokenizer" / "diffusion_pytorch_model.safetensors").is_file()


def readme_bash_lines() -> list[list[str]]:
    """The README's fenced bash commands, one list of words per command (continuation lines joined)."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0])
            if words:
                commands.append(words)
    return commands


def test_readme_vq_hub_commands_run(tmp_path, monkeypatch, capsys):
    """Every `vq-hub` command of the README runs as written on the shipped checkpoints (cheap ones; the ones on a
    user's own folders are parsed only), in a scratch folder."""
    from vq_hub.cli import build_parser, main

    monkeypatch.chdir(tmp_path)
    for name in ("checkpoints", "src", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    commands = [words[1:] for words in readme_bash_lines() if words[0] == "vq-hub"]
    assert {argv[0] for argv in commands} == {"generate", "reconstruct", "tokenize", "detokenize", "compress",
                                              "decompress", "evaluate", "codebook", "info", "convert",
                                              "demo"}  # fmt: skip
    for argv in commands:
        # the demo serves until stopped (tests/test_demo*.py run it); evaluate samples hundreds of images
        # (tests/test_evaluation.py runs it)
        if "my-diffusion" in argv or argv[0] in ("demo", "evaluate"):
            build_parser().parse_args(argv)
            continue
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    assert (tmp_path / "reverse.gif").is_file() and (tmp_path / "decoded.png").is_file()
    assert (tmp_path / "codebook.png").is_file() and (tmp_path / "llamagen-tiny" / "config.json").is_file()


def test_make_demo_generates_grids_from_the_shipped_checkpoints(tmp_path, monkeypatch, capsys):
    """The main job: the `vq-hub` lines of the Makefile's demo recipe, run in a scratch folder."""
    import shlex

    from vq_hub.cli import main

    recipe = re.search(r"^demo: install\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    commands = [shlex.split(line.strip())[1:] for line in recipe.splitlines() if "bin/vq-hub" in line]
    assert len(commands) == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    for argv in commands:
        assert main(argv) == 0
        out = argv[argv.index("--out") + 1]
        printed = capsys.readouterr().out.strip()
        assert printed.startswith(f"wrote {out}: 10 row(s) (T-shirt/top, Trouser") and (tmp_path / out).is_file()
        assert printed.endswith("images per class"), printed


def test_readme_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    commands = re.findall(r"^make ([\w-]+)", (ROOT / "README.md").read_text(), flags=re.M)
    assert {"demo", "test"} <= set(commands)
    for target in commands:
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"README names `make {target}`, Makefile lacks it"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_demo_script_trains_and_writes_outputs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart_tokenizer.py"), "--output_dir", str(tmp_path),
         "--max_train_steps", "3", "--batch_size", "8"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert re.search(r"held-out: 100 images → codes \(8, 8\), PSNR [\d.]+ dB", result.stdout), result.stdout
    assert (tmp_path / "reconstructions.png").is_file()
    assert (tmp_path / "tokenizer" / "diffusion_pytorch_model.safetensors").is_file()


def test_readme_script_commands_parse(monkeypatch):
    """Every `examples/` and `conversion/` script command in the README's bash blocks is accepted by that script's
    parser."""
    import importlib.util

    commands = []
    for words in readme_bash_lines():
        scripts = [word for word in words if re.fullmatch(r"(examples|conversion)/\w+\.py", word)]
        if scripts:
            commands.append((scripts[0], words[words.index(scripts[0]) + 1 :]))
    assert {"examples/train_vqgan.py", "examples/encode_dataset.py", "examples/train_prior.py",
            "examples/train_diffusion.py", "conversion/convert_diffusers_vqmodel.py",
            "conversion/convert_taming_vqgan.py"} <= {script for script, _ in commands}  # fmt: skip
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # as when the scripts run: their folder is on sys.path
    for script, arguments in commands:
        spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.parse_args(arguments)  # argparse exits (a test failure) on an unknown or malformed flag
