"""Data that does not fit in memory: a `datasets` streaming source (Hub dataset, Parquet or WebDataset shards), split
across processes, shuffled by (seed, epoch), and resumable at the exact sample a checkpoint stopped at.

`datasets` streams, splits (`split_dataset_by_node`) and shuffles (`shuffle` + `set_epoch`); what it cannot do is
resume a shuffled stream exactly (its `state_dict()` drops the shuffle buffer), so `ProcessStream` counts the rows it
handed out and, on resume, replays its epoch's stream without decoding the rows it skips."""

import argparse
import glob
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets

STREAM_SOURCE_FLAGS = ("--dataset_name", "--train_data_dir", "--train_parquet", "--train_webdataset")


def add_streaming_arguments(group: argparse._ArgumentGroup, images: bool = True) -> None:
    """`--streaming`, `--shuffle_buffer_size` and, for image scripts, `--train_webdataset` (read only as a stream)."""
    group.add_argument("--streaming", action="store_true",
                       help="Stream the training data instead of loading it into memory (--dataset_name, "
                       "--train_parquet files or globs, --train_data_dir, --train_webdataset; the prior scripts: the "
                       "--codes_dir shards); training needs --max_train_steps.")  # fmt: skip
    if images:
        group.add_argument("--train_webdataset", nargs="+",
                           help="WebDataset .tar shards (files or globs; with --streaming).")
    group.add_argument("--shuffle_buffer_size", type=int, default=1000,
                       help="Rows in the streaming shuffle buffer (the shard order is shuffled too); 0: no shuffle.")


def check_streaming_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, training: bool = True) -> None:
    """Refuse flag combinations a stream cannot serve, naming the flag."""
    if getattr(args, "train_webdataset", None) and not args.streaming:
        parser.error("--train_webdataset is read as a stream: add --streaming")
    if not args.streaming:
        return
    if training and not args.max_train_steps:
        parser.error("--streaming needs --max_train_steps: a stream has no length to count epochs in")
    if args.shuffle_buffer_size < 0:
        parser.error(f"--shuffle_buffer_size must be ≥ 0, got {args.shuffle_buffer_size}")


def expand_data_files(patterns: list[str] | str, flag: str) -> list[str]:
    """Files named by paths or glob patterns, sorted (a fixed shard order); ValueError naming `flag` if none."""
    patterns = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
    files = sorted({file for pattern in patterns for file in glob.glob(str(pattern))})
    missing = [str(pattern) for pattern in patterns if not glob.glob(str(pattern))]
    if missing:
        raise ValueError(f"`{flag}`: no file matches {missing}")
    return files


def stream_source(args: argparse.Namespace, split: str = "train") -> datasets.IterableDataset:
    """The streaming dataset of the data flags (`dataset_name`, `train_data_dir`, `train_parquet`, `train_webdataset`:
    exactly one; `max_train_samples` keeps the first rows)."""
    sources = {flag: getattr(args, flag[2:], None) for flag in STREAM_SOURCE_FLAGS}
    given = [flag for flag, value in sources.items() if value]
    if len(given) != 1:
        raise ValueError(f"--streaming reads exactly one of {', '.join(STREAM_SOURCE_FLAGS)}; got {given or 'none'}")
    cache_dir = getattr(args, "cache_dir", None)
    if args.dataset_name:
        stream = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=split, streaming=True,
                                       cache_dir=cache_dir)  # fmt: skip
    elif args.train_data_dir:
        if not Path(args.train_data_dir).is_dir():
            raise ValueError(f"--train_data_dir {args.train_data_dir!r} is not a folder")
        stream = datasets.load_dataset("imagefolder", data_dir=args.train_data_dir, split="train", streaming=True)
    else:
        kind, flag = ("parquet", "--train_parquet") if args.train_parquet else ("webdataset", "--train_webdataset")
        files = expand_data_files(sources[flag], flag)
        stream = datasets.load_dataset(kind, data_files=files, split="train", streaming=True)
    limit = getattr(args, "max_train_samples", None) or getattr(args, "max_samples", None)
    return stream.take(limit) if limit else stream


def known_length(stream: datasets.IterableDataset) -> int | None:
    """Rows of a stream when its metadata records them (a Hub dataset's split info), else None."""
    splits = stream.info.splits if stream.info is not None else None
    if splits and stream.split and str(stream.split) in splits:
        return splits[str(stream.split)].num_examples or None
    return None


def streaming_batches(accelerator, dataset: datasets.IterableDataset, args: argparse.Namespace,
                      collate: Callable[[list[dict]], object],
                      prepare: Callable[[dict], dict] | None = None) -> Iterator:  # fmt: skip
    """This process's training batches of `dataset` (`--seed`, `--shuffle_buffer_size`, `--train_batch_size`, rows
    prepared by `--dataloader_num_workers` threads) on its device, forever; the stream is registered for
    checkpointing, so call before `accelerator.load_state`."""
    from accelerate.utils import send_to_device

    stream = ProcessStream(dataset, accelerator.process_index, accelerator.num_processes, args.seed,
                           args.shuffle_buffer_size, prepare, getattr(args, "dataloader_num_workers", 0))  # fmt: skip
    accelerator.register_for_checkpointing(stream)
    return (send_to_device(batch, accelerator.device) for batch in stream.batches(args.train_batch_size, collate))


class ProcessStream:
    """One process's endless, resumable share of a stream: shuffled by `seed` (shard order and a buffer of
    `shuffle_buffer_size` rows, reshuffled each epoch by `set_epoch`), split by `split_dataset_by_node`. When a
    process reaches the end of its share, it starts its next epoch on its own, so no process ever runs dry while the
    others wait at a collective (shares differ in size when the shards do not divide among the processes).

    Register it with `accelerator.register_for_checkpointing`: its state (epoch and rows handed out, per process)
    is saved with each checkpoint and a resumed run continues at the next row an uninterrupted run would read.

    Rows are decoded, then passed through `prepare` (e.g. pixels from an image), by `threads` threads when given
    (images decode outside Python's lock), in order."""

    def __init__(self, dataset: datasets.IterableDataset, rank: int, world_size: int, seed: int,
                 shuffle_buffer_size: int = 1000, prepare: Callable[[dict], dict] | None = None, threads: int = 0):
        from datasets.distributed import split_dataset_by_node

        self.features = dataset.features  # decoding happens here, after the rows a resume skips
        self.prepare, self.threads = prepare, threads
        if shuffle_buffer_size:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        self.dataset = split_dataset_by_node(dataset.decode(False), rank, world_size)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    def __iter__(self) -> Iterator[dict]:
        while True:
            read = 0
            for row in self.epoch_rows(self.position):
                self.position += 1
                read += 1
                yield row
            if self.position == 0 and read == 0:
                raise ValueError(f"process {self.rank} of {self.world_size} got no rows: the stream has fewer rows "
                                 "than processes")  # fmt: skip
            self.epoch, self.position = self.epoch + 1, 0

    def epoch_rows(self, start: int = 0) -> Iterator[dict]:
        """This process's rows of the current epoch from row `start` on, decoded (the rows before are read, not
        decoded)."""
        self.dataset.set_epoch(self.epoch)
        rows = itertools.islice(self.dataset, start, None)
        if not self.threads:
            yield from map(self._decoded, rows)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        # A sliding window of a few rows per thread, in order: a row is handed out and the next one submitted, so
        # decoding keeps running while the training step uses what is ready (never the whole stream in memory).
        with ThreadPoolExecutor(self.threads) as pool:
            pending = deque(pool.submit(self._decoded, row) for row in itertools.islice(rows, 4 * self.threads))
            while pending:
                decoded = pending.popleft().result()
                pending.extend(pool.submit(self._decoded, row) for row in itertools.islice(rows, 1))
                yield decoded

    def _decoded(self, row: dict) -> dict:
        row = self.features.decode_example(row) if self.features is not None else row
        return self.prepare(row) if self.prepare is not None else row

    def batches(self, batch_size: int, collate: Callable[[list[dict]], object]) -> Iterator:
        """`collate(rows)` of each `batch_size` rows, forever."""
        rows = iter(self)
        while True:
            yield collate([next(rows) for _ in range(batch_size)])

    def state_dict(self) -> dict:
        """Every process's (epoch, position), gathered: Accelerate calls this on each process and the main one
        writes it (a collective: every process must save together, as `save_state` does)."""
        import torch.distributed as dist
        from accelerate.utils import gather_object

        mine = [(self.rank, {"epoch": self.epoch, "position": self.position})]
        gathered = gather_object(mine) if dist.is_available() and dist.is_initialized() else mine
        return {"world_size": self.world_size, "processes": dict(gathered)}

    def load_state_dict(self, state: dict) -> None:
        if state["world_size"] != self.world_size:
            raise ValueError(f"this streaming checkpoint was written by {state['world_size']} processes; resume it on "
                             f"{state['world_size']} (a stream's split depends on the process count), not "
                             f"{self.world_size}")  # fmt: skip
        mine = state["processes"][self.rank]
        self.epoch, self.position = mine["epoch"], mine["position"]
