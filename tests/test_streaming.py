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
    threaded = take(ProcessStream(stream_of(files), 0, 1, seed=1, shuffle_buffer_size=8, threads=3), 40)
    assert first == again == threaded and first != other_seed
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


def test_webdataset_shards_stream_decoded_images(tmp_path):
    """`datasets` reads WebDataset tars offline: `--train_webdataset` globs give decoded images and labels."""
    import argparse
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from vq_hub.streaming import stream_source

    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard}.tar", "w") as tar:
            for index in range(shard * 3, shard * 3 + 3):
                image = io.BytesIO()
                Image.fromarray(np.full((4, 4, 3), index, np.uint8)).save(image, "PNG")
                for name, data in ((f"{index:04d}.png", image.getvalue()), (f"{index:04d}.cls", str(index).encode())):
                    member = tarfile.TarInfo(name)
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    flags = dict.fromkeys(("dataset_name", "train_data_dir", "train_parquet", "max_train_samples"))
    args = argparse.Namespace(**flags, train_webdataset=[str(tmp_path / "shard-*.tar")])
    stream = ProcessStream(stream_source(args), 0, 1, seed=0, shuffle_buffer_size=0)
    rows = list(stream.epoch_rows())
    assert [row["cls"] for row in rows] == list(range(6))
    assert [np.asarray(row["png"])[0, 0, 0] for row in rows] == list(range(6))


def encode(synthetic_parquet, tokenizer, output, *flags, launcher=None):
    from conftest import run_script

    return run_script("encode_dataset.py", [
        "--vqvae_name_or_path", str(tokenizer), "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--batch_size", "8", "--output_dir", str(output), *flags,
    ], launcher=launcher, env={"ACCELERATE_USE_CPU": "1"} if launcher else None)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    import torch

    from conftest import tiny_vq_config
    from vq_hub import VQVAEModel

    folder = tmp_path_factory.mktemp("tokenizer")
    torch.manual_seed(0)
    VQVAEModel(**tiny_vq_config(sample_size=16)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("source", [[], ["--streaming"]], ids=["in-memory", "streaming"])
def test_interrupted_sharded_encoding_resumes_to_the_shards_of_one_run(synthetic_parquet, tokenizer, tmp_path,
                                                                        monkeypatch, source):  # fmt: skip
    """An encoding stopped after two of its five shards (a half-written third left behind as a temporary file) and run
    again writes only the three missing shards, which equal those of an uninterrupted run; the manifest lists all."""
    import json

    import pyarrow.parquet as pq

    from conftest import load_example

    script = load_example("encode_dataset")
    argv = ["--vqvae_name_or_path", str(tokenizer), "--train_parquet", str(synthetic_parquet / "train.parquet"),
            "--batch_size", "8", *source, "--chunk_size", "15"]  # fmt: skip
    script.main(argv + ["--output_dir", str(tmp_path / "once")])

    written, write_shard = [], script.write_shard

    def interrupted_after_two(table, path):
        if len(written) == 2:
            with open(path.parent / f".{path.name}.half.tmp.parquet", "wb") as half:
                half.write(b"PAR1")
            raise KeyboardInterrupt
        written.append(path.name)
        write_shard(table, path)

    monkeypatch.setattr(script, "write_shard", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        script.main(argv + ["--output_dir", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed" / "encoding.json").exists()
    counted = lambda table, path: (written.append(path.name), write_shard(table, path))  # noqa: E731
    monkeypatch.setattr(script, "write_shard", counted)
    info = script.main(argv + ["--output_dir", str(tmp_path / "resumed")])

    assert written == [f"chunk-{chunk:06d}-process-000-of-001.parquet" for chunk in range(5)]
    once = json.loads((tmp_path / "once" / "encoding.json").read_text())
    assert info == once and info["num_examples"] == {"train": 64} and len(info["shards"]["train"]) == 5
    for name in info["shards"]["train"]:
        assert pq.read_table(tmp_path / "resumed" / name).equals(pq.read_table(tmp_path / "once" / name)), name
    with pytest.raises(SystemExit, match="--chunk_size 15"):
        script.main(argv[:-1] + ["10", "--output_dir", str(tmp_path / "resumed")])


@pytest.mark.slow
def test_two_processes_encode_shards_and_train_a_prior_from_them_streaming(synthetic_parquet, tokenizer, tmp_path):
    """Shards written by two processes hold every image once (the codes of a single-file encoding, in another order);
    a two-process prior streams them and saves a loadable pipeline."""
    import pyarrow.parquet as pq

    from conftest import TWO_PROCESS_LAUNCHER, run_script
    from vq_hub import VQPipeline

    encode(synthetic_parquet, tokenizer, tmp_path / "single")
    result = encode(synthetic_parquet, tokenizer, tmp_path / "shards", "--chunk_size", "10",
                    launcher=TWO_PROCESS_LAUNCHER)  # fmt: skip
    assert "[process 1] encoded 32 train images" in result.stdout and "encoded train: 64 images" in result.stdout
    shards = sorted((tmp_path / "shards" / "train").glob("chunk-*.parquet"))
    assert len(shards) == 8  # 32 images per process in chunks of 10, 10, 10, 2
    rows = lambda table: sorted(zip(table["codes"].to_pylist(), table["label"].to_pylist()))  # noqa: E731
    assert rows(pq.read_table(shards)) == rows(pq.read_table(tmp_path / "single" / "train.parquet"))

    run_script("train_prior.py", [
        "--codes_dir", str(tmp_path / "shards"), "--streaming", "--max_train_steps", "3", "--hidden_size", "32",
        "--num_layers", "2", "--num_heads", "2", "--train_batch_size", "4", "--report_to", "none",
        "--lr_warmup_steps", "0", "--images_per_class", "1", "--output_dir", str(tmp_path / "prior"),
    ], launcher=TWO_PROCESS_LAUNCHER, env={"ACCELERATE_USE_CPU": "1"})  # fmt: skip
    pipe = VQPipeline.from_pretrained(tmp_path / "prior")
    assert pipe(batch_size=1, class_labels=[0], output_type="codes").codes.shape == (1, 8, 8)


@pytest.mark.slow
def test_a_classifier_trains_from_a_stream_and_saves_a_loadable_network(synthetic_parquet, tmp_path):
    from conftest import run_script
    from vq_hub.evaluation import ImageClassifier

    shards = split_into_shards(synthetic_parquet / "train.parquet", tmp_path / "shards", [32, 32])
    run_script("train_classifier.py", [
        "--streaming", "--train_parquet", shards, "--validation_parquet", str(synthetic_parquet / "test.parquet"),
        "--dataset", "synthetic", "--resolution", "16", "--block_out_channels", "8", "16", "--layers_per_block", "1",
        "--max_train_steps", "2", "--train_batch_size", "8", "--report_to", "none", "--output_dir", str(tmp_path / "c"),
    ])  # fmt: skip
    assert ImageClassifier.from_pretrained(tmp_path / "c").config.num_classes == 3
    assert "(streamed images, part-*.parquet)" in (tmp_path / "c" / "README.md").read_text()
