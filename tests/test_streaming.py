"""Issue 26, items 2–3: streaming sources split across processes, shuffled by (seed, epoch), resumed at the exact
sample; sharded, resumable encoding; priors trained from code shards."""

import itertools

import datasets
import pytest

from vq_hub.streaming import ProcessStream, expand_data_files


@pytest.fixture(autouse=True)
def _no_parquet_shutdown_sleep(monkeypatch):
    """`datasets` sleeps 5 s whenever a Parquet stream's iterator closes (an Arrow thread-shutdown workaround); these
    tests close dozens."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def write_index_shards(folder, sizes: list[int]) -> list[str]:
    """Parquet shards whose rows are 0, 1, 2, … in order (`sizes` rows each)."""
    files, start = [], 0
    for index, size in enumerate(sizes):
        path = folder / f"shard-{index}.parquet"
        datasets.Dataset.from_dict({"index": list(range(start, start + size))}).to_parquet(str(path))
        files.append(str(path))
        start += size
    return files


def stream_of(files) -> datasets.IterableDataset:
    return datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)


def take(stream: ProcessStream, count: int) -> list[int]:
    return [row["index"] for row in itertools.islice(stream, count)]


@pytest.mark.parametrize("sizes, world_size", [([10, 10, 10, 10], 2), ([10, 10, 10], 2), ([7, 13, 5], 3)])
def test_process_shares_cover_the_data_without_overlap(tmp_path, sizes, world_size):
    """Shards that divide among the processes go whole to one process; otherwise each process keeps every
    world_size-th row. Either way one epoch of every process is the dataset, once."""
    files = write_index_shards(tmp_path, sizes)
    shares = []
    for rank in range(world_size):
        stream = ProcessStream(stream_of(files), rank, world_size, seed=3, shuffle_buffer_size=8)
        share = [row["index"] for row in itertools.takewhile(lambda _: stream.epoch == 0, stream)]
        shares.append(share)
    assert sorted(itertools.chain(*shares)) == list(range(sum(sizes)))


def test_order_depends_on_seed_and_epoch_only(tmp_path):
    files = write_index_shards(tmp_path, [10, 10])
    first, again = (take(ProcessStream(stream_of(files), 0, 1, seed=1, shuffle_buffer_size=8), 40) for _ in range(2))
    other_seed = take(ProcessStream(stream_of(files), 0, 1, seed=2, shuffle_buffer_size=8), 40)
    assert first == again and first != other_seed
    assert sorted(first[:20]) == sorted(first[20:]) == list(range(20)) and first[:20] != first[20:]  # epochs differ


def test_resume_continues_at_the_next_row(tmp_path):
    """A stream stopped after k rows (inside the second epoch) and restored from its state reads what an uninterrupted
    one reads next, shuffle buffer and all."""
    files = write_index_shards(tmp_path, [9, 8, 6])
    uninterrupted = take(ProcessStream(stream_of(files), 1, 2, seed=0, shuffle_buffer_size=5), 40)
    stopped = ProcessStream(stream_of(files), 1, 2, seed=0, shuffle_buffer_size=5)
    seen = take(stopped, 17)
    state = stopped.state_dict()
    assert state["world_size"] == 2 and state["processes"][1]["epoch"] == 1  # the share has 11 or 12 rows
    resumed = ProcessStream(stream_of(files), 1, 2, seed=0, shuffle_buffer_size=5)
    resumed.load_state_dict(state)
    assert seen + take(resumed, 23) == uninterrupted
    with pytest.raises(ValueError, match="resume it on 2"):
        ProcessStream(stream_of(files), 0, 1, seed=0).load_state_dict({**state, "world_size": 2})


def test_expand_data_files_names_the_flag(tmp_path):
    files = write_index_shards(tmp_path, [1, 1])
    assert expand_data_files([str(tmp_path / "*.parquet")], "--train_parquet") == files
    with pytest.raises(ValueError, match="--train_parquet.*nothing-"):
        expand_data_files([str(tmp_path / "nothing-*.parquet")], "--train_parquet")


def split_into_shards(parquet, folder, sizes: list[int]) -> str:
    """`parquet`'s rows written as shards of `sizes` rows (features kept); returns their glob."""
    import pyarrow.parquet as pq

    table, start = pq.read_table(parquet), 0
    folder.mkdir()
    for index, size in enumerate(sizes):
        pq.write_table(table.slice(start, size), folder / f"part-{index:03d}.parquet")
        start += size
    return str(folder / "part-*.parquet")


@pytest.mark.slow
def test_two_processes_train_a_tokenizer_from_parquet_shards_and_resume_exactly(synthetic_parquet, tmp_path):
    """Three shards on two processes (the split falls back to every other row); a run resumed from its step-2
    checkpoint ends with the weights of the uninterrupted run: both saw the same rows in the same order."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from conftest import TWO_PROCESS_LAUNCHER, run_script
    from vq_hub import VQVAEModel

    shards = split_into_shards(synthetic_parquet / "train.parquet", tmp_path / "shards", [24, 24, 16])
    common = [
        "--streaming", "--train_parquet", shards, "--shuffle_buffer_size", "16", "--vqvae", "--resolution", "16",
        "--block_out_channels", "8", "16", "--latent_channels", "4", "--norm_num_groups", "8", "--num_vq_embeddings",
        "16", "--train_batch_size", "4", "--max_train_steps", "4", "--checkpointing_steps", "2", "--report_to", "none",
        "--lr_warmup_steps", "0", "--learning_rate", "1e-3", "--random_flip",
    ]  # fmt: skip
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    two = {"launcher": TWO_PROCESS_LAUNCHER, "env": {"ACCELERATE_USE_CPU": "1"}}
    run_script("train_vqgan.py", common + ["--output_dir", str(uninterrupted)], **two)
    assert VQVAEModel.from_pretrained(uninterrupted).tokenize(torch.zeros(1, 3, 16, 16)).shape == (1, 8, 8)

    resumed.mkdir()
    shutil.copytree(uninterrupted / "checkpoint-2", resumed / "checkpoint-2")
    run_script("train_vqgan.py", common + ["--output_dir", str(resumed), "--resume_from_checkpoint", "latest"], **two)
    name = "diffusion_pytorch_model.safetensors"
    expected, actual = load_file(uninterrupted / name), load_file(resumed / name)
    assert all(torch.equal(expected[key], actual[key]) for key in expected), "the resumed run saw other rows"
