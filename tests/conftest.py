import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test reaches the network
# A real two-process CPU run (`accelerate launch --cpu --num_processes 2` silently runs one): set ACCELERATE_USE_CPU=1.
TWO_PROCESS_LAUNCHER = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_close_to_scale(ours: torch.Tensor, theirs: torch.Tensor, relative: float = 2e-5) -> None:
    """A converted model's output against the source's: equal shapes, and no element further apart than `relative`
    of the source output's largest magnitude (at least 1) — rounding passes, a mapping mistake does not."""
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= relative * max(1.0, theirs.abs().max().item())


def tiny_vq_config(**overrides) -> dict:
    """A VQVAEModel config small enough for unit tests: 16×16 images → 8×8 codes."""
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        num_vq_embeddings=32,
    )
    config.update(overrides)
    return config


def run_script(script: str, args: list[str], launcher: list[str] | None = None, check: bool = True,
               env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Run `examples/<script>` as users launch it; on failure, show the ends of its output.

    A run past `timeout` (default: 5 minutes on two processes, which take well under one; 10 on one) fails the test,
    with the stacks of its processes when py-spy is installed: no retry, a hang is a bug (issue 26's was a gloo
    deadlock at exit, see `vq_hub.training_guards.destroys_process_group_after`)."""
    command = (launcher or [sys.executable]) + [str(ROOT / "examples" / script), *args]
    return run_command(command, timeout or (300 if launcher == TWO_PROCESS_LAUNCHER else 600), check, env, script)


def run_command(command: list[str], timeout: float, check: bool = True, env: dict | None = None,
                name: str | None = None, cwd=None) -> subprocess.CompletedProcess:  # fmt: skip
    """`subprocess.run(command)` that fails the test past `timeout` seconds, killing the whole process tree (a
    launcher's ranks too: torchrun starts each in a session of its own) after dumping its Python stacks."""
    import psutil

    name = name or Path(command[1] if len(command) > 1 else command[0]).name
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                               env={**os.environ, **(env or {})})  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        stacks = dump_stacks(tree)
        for pid in reversed(tree):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"{name} hung: no exit after {timeout:.0f} s (processes {tree}).\n{stacks}\n"
                    f"--- stdout ---\n{stdout[-3000:]}\n--- stderr ---\n{stderr[-5000:]}")  # fmt: skip
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{stdout[-3000:]}\n{stderr[-5000:]}")
    return result


def dump_stacks(pids: list[int]) -> str:
    """`py-spy dump --native` of each process (Python and C++ frames: a deadlock shows who holds what), or a note."""
    import shutil

    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        return "(install py-spy to see the stacks of a hung run)"
    dumps = []
    for pid in pids:
        try:
            dump = subprocess.run([py_spy, "dump", "--native", "--pid", str(pid)], capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            dumps.append(dump.stdout or dump.stderr)
        except subprocess.TimeoutExpired:
            dumps.append(f"py-spy dump of {pid} timed out")
    return "\n".join(dumps)


@pytest.fixture(scope="session")
def synthetic_parquet(tmp_path_factory) -> Path:
    """64 train + 16 test images, 16×16 RGB: a coloured rectangle on a dark background; the label (0–2) is the
    rectangle's brightest colour channel."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for split, count in [("train", 64), ("test", 16)]:
        images, labels = [], []
        for index in range(count):
            array = np.full((16, 16, 3), rng.integers(0, 60), dtype=np.uint8)
            top, left = rng.integers(0, 8, size=2)
            colour = rng.integers(80, 160, size=3)
            colour[index % 3] = 255
            array[top : top + rng.integers(4, 9), left : left + rng.integers(4, 9)] = colour
            images.append(Image.fromarray(array))
            labels.append(index % 3)
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=["red", "green", "blue"])})
        Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            str(folder / f"{split}.parquet")
        )
    return folder


def saved_model_index(pipe, folder: Path) -> dict:
    """Save `pipe` to `folder` and return its model_index.json without the diffusers version."""
    import json

    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("_diffusers_version")
    return index


def put_in_hub_cache(folder: Path, repo_id: str, cache: Path) -> Path:
    """Copy `folder` into `cache` laid out as a downloaded Hub snapshot of `repo_id` (models--owner--name/
    snapshots/<commit> and refs/main), as `snapshot_download` leaves it; returns the snapshot folder."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF cache that `snapshot_download` uses, offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def load_example(name: str):
    """Import examples/<name>.py as a module (its folder on sys.path, as when it runs)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return module


class CapturingHfApi:
    """Stands in for `huggingface_hub.HfApi` (no Hub is reachable in tests): keeps a copy of every uploaded folder
    under `CapturingHfApi.root`, so tests can read exactly what would have been published."""

    root: Path | None = None
    tokens: list = []

    def __init__(self, token=None):
        CapturingHfApi.tokens.append(token)

    def create_repo(self, repo_id, private=False, exist_ok=False):
        pass

    def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns=None):
        import shutil

        shutil.copytree(folder_path, CapturingHfApi.root / repo_id.replace("/", "--"), dirs_exist_ok=True)
        return type("CommitInfo", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()


def files_containing(folder: Path, secret: str) -> list[str]:
    """Every file under `folder` whose bytes contain `secret` (event files and pickles included)."""
    return [str(p) for p in Path(folder).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped, with the reason, where there is none (CI, CPU machines)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by benchmarks/gpu_check.sh on a GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
