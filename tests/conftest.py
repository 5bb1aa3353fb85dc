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
               env: dict | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Run `examples/<script>` as users launch it; on failure, show the ends of its output.

    A two-process run that hangs is killed after 5 minutes (they take under a minute) and run once more: gloo on
    this 2-core machine once left both ranks idle at a checkpoint barrier, with no error, in about 20 full runs of
    the suite, and never twice in a row; a second hang fails the test."""
    command = (launcher or [sys.executable]) + [str(ROOT / "examples" / script), *args]
    two_processes = launcher == TWO_PROCESS_LAUNCHER
    for attempt in (1, 2) if two_processes else (1,):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300 if two_processes else 600,
                                    env={**os.environ, **(env or {})})  # fmt: skip
            break
        except subprocess.TimeoutExpired:
            if attempt == 2 or not two_processes:
                raise
            print(f"{script} on two processes hung; running it once more", file=sys.stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


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
