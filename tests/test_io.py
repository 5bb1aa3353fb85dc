"""Atomic saves: at every rename a save can be interrupted, and the target still holds a whole save, old or new."""

import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_vq_config

import vq_hub.utils.io as io
from vq_hub import VQVAEModel
from vq_hub.utils.io import atomic_directory, atomic_file, check_safetensors_files


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path → content)."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_save(folder: Path, version: str) -> None:
    """A pipeline-like save: an index file and two component folders."""
    (folder / "model_index.json").write_text(version)
    for component in ("vqvae", "prior"):
        (folder / component).mkdir()
        (folder / component / "weights").write_text(f"{component} {version}")


class Interrupted(KeyboardInterrupt):
    """Stands for Ctrl-C (a BaseException, as the real one)."""


def count_renames(monkeypatch, action) -> int:
    calls = []
    for name in ("_rename", "_exchange"):
        original = getattr(io, name)
        monkeypatch.setattr(io, name, lambda a, b, original=original: (calls.append(1), original(a, b))[1])
    action()
    monkeypatch.undo()
    return len(calls)


@pytest.mark.parametrize("exchange_supported", [True, False])
def test_a_save_interrupted_at_any_rename_leaves_the_old_or_the_new_save(tmp_path, monkeypatch, exchange_supported):
    target = tmp_path / "pipe"
    target.mkdir()
    write_save(target, "old")
    (target / "checkpoint-10").mkdir()
    (target / "checkpoint-10" / "state").write_text("kept")
    old = tree(target)

    def save(version):
        with atomic_directory(target, replaces=["model_index.json", "vqvae", "prior"]) as staging:
            write_save(staging, version)

    if not exchange_supported:
        monkeypatch.setattr(io, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(22, "not supported")))
    total = count_renames(monkeypatch, lambda: save("probe"))
    if not exchange_supported:
        monkeypatch.setattr(io, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(22, "not supported")))
    save("old")  # back to the old content (the probe replaced it)
    assert tree(target) == old and total >= 2

    for failing in range(1, total + 1):
        calls = []
        for name in ("_rename", "_exchange"):
            original = getattr(io, name)

            def interrupting(a, b, original=original):
                calls.append(1)
                if len(calls) == failing:
                    raise Interrupted
                return original(a, b)

            monkeypatch.setattr(io, name, interrupting)
        with pytest.raises(Interrupted):
            save("new")
        monkeypatch.undo()
        if not exchange_supported:
            monkeypatch.setattr(io, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(22, "not supported")))
        assert tree(target) == old, f"interrupted at rename {failing} of {total}"
        assert [p.name for p in tmp_path.iterdir()] == ["pipe"], "no temporary folder is left behind"

    save("new")
    assert tree(target) == {**{k: v.replace("old", "new") for k, v in old.items()}, "checkpoint-10/state": "kept"}


def test_a_new_target_appears_in_one_rename_and_errors_leave_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "new") as staging:
            (staging / "half").write_text("written")
            raise RuntimeError("the save failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(tmp_path / "new") as staging:
        (staging / "whole").write_text("written")
    assert tree(tmp_path / "new") == {"whole": "written"}


def test_replaces_star_writes_the_folder_as_a_whole(tmp_path):
    target = tmp_path / "codes"
    target.mkdir()
    (target / "validation.parquet").write_text("from an earlier run")
    with atomic_directory(target, replaces=["*"]) as staging:
        (staging / "train.parquet").write_text("new")
    assert tree(target) == {"train.parquet": "new"}


def test_unsharded_save_over_a_sharded_one_loads_the_new_weights(tmp_path):
    first = VQVAEModel(**tiny_vq_config())
    first.save_pretrained(tmp_path, max_shard_size="20KB")
    assert any(p.name.endswith(".index.json") for p in tmp_path.iterdir())
    (tmp_path / "notes.txt").write_text("a user's notes")
    torch.manual_seed(1)
    second = VQVAEModel(**tiny_vq_config())
    second.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors",
                                                          "notes.txt"]  # fmt: skip
    loaded = VQVAEModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), second.state_dict().values()))


def test_a_symlinked_target_is_staged_beside_its_resolved_folder(tmp_path, monkeypatch):
    real = tmp_path / "elsewhere" / "model"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    staged_in = []
    original = io.tempfile.mkdtemp
    monkeypatch.setattr(io.tempfile, "mkdtemp", lambda **kw: (staged_in.append(kw["dir"]), original(**kw))[1])
    VQVAEModel(**tiny_vq_config()).save_pretrained(tmp_path / "link")
    assert staged_in == [real.parent] and (tmp_path / "link").is_symlink()
    assert (real / "config.json").is_file()


def test_a_symlink_to_another_filesystem_saves(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) on this machine")
    real = Path(io.tempfile.mkdtemp(dir=other)) / "model"
    try:
        real.mkdir()
        (tmp_path / "link").symlink_to(real)
        VQVAEModel(**tiny_vq_config()).save_pretrained(tmp_path / "link")  # was: Invalid cross-device link
        VQVAEModel(**tiny_vq_config()).save_pretrained(tmp_path / "link")  # over an existing save, too
        assert VQVAEModel.from_pretrained(tmp_path / "link").config.num_vq_embeddings == 32
    finally:
        import shutil

        shutil.rmtree(real.parent)


def test_atomic_file_keeps_the_suffix_and_leaves_nothing_on_error(tmp_path):
    with atomic_file(tmp_path / "grid.png") as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path
        temporary.write_text("done")
    assert (tmp_path / "grid.png").read_text() == "done"
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "grid.png") as temporary:
            temporary.write_text("half")
            raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"] and (tmp_path / "grid.png").read_text() == "done"


def test_a_truncated_weights_file_is_named_with_its_cause(tmp_path):
    VQVAEModel(**tiny_vq_config()).save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(OSError, match=r"damaged or truncated \(Error while deserializing header"):
        check_safetensors_files(tmp_path)
    with pytest.raises(OSError, match="diffusion_pytorch_model.safetensors: the weights file is damaged"):
        VQVAEModel.from_pretrained(tmp_path)


def test_saves_get_the_permissions_of_any_new_file(tmp_path):
    """Not the private 0700/0600 of temporary files: a model saved on a shared machine is readable like any file."""
    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as staging:
            (staging / "config.json").write_text("{}")
        with atomic_file(tmp_path / "codes.npy") as temporary:
            temporary.write_bytes(b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "codes.npy").stat().st_mode & 0o777 == 0o644
