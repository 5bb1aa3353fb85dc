"""The README's Python quickstart runs as written, and the demo script (the README's main job) runs end to end."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md should contain a Python quickstart"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "my-tokenizer" / "diffusion_pytorch_model.safetensors").is_file()


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
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#")[0])
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
