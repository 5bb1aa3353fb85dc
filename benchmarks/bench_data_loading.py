"""Images/s that the training data path delivers, in memory (`train_vqgan.py`'s default: a `datasets.Dataset` with
the pixel transform, a seeded sampler, a DataLoader) against `--streaming` (a Parquet stream split by process,
shuffled through a buffer, decoded and transformed in the training process). A data path slower than the training
step's images/s (docs/gpu.md: about 1,000 images/s for 32×32 VQ-GAN steps on an H200) starves the GPU.

    python benchmarks/bench_data_loading.py --train_parquet ../shared/data/cifar10/train.parquet [--batches 100]
"""

import argparse
import itertools
import time

import torch

from vq_hub.data import image_transform, read_parquet
from vq_hub.streaming import ProcessStream, expand_data_files, stream_source
from vq_hub.training_utils import EpochSeededSampler


def in_memory_batches(files: list[str], batch_size: int, transform):
    dataset = read_parquet(files)
    dataset.set_transform(transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSeededSampler(len(dataset), 0), drop_last=True,
        collate_fn=lambda rows: torch.stack([row["pixel_values"] for row in rows]),
    )  # fmt: skip
    return iter(loader)


def streaming_batches(args: argparse.Namespace, transform, threads: int):
    def prepare(row: dict) -> torch.Tensor:
        return transform({key: [value] for key, value in row.items()})["pixel_values"][0]

    stream = ProcessStream(stream_source(args), 0, 1, seed=0, shuffle_buffer_size=args.shuffle_buffer_size,
                           prepare=prepare, threads=threads)  # fmt: skip
    return stream.batches(args.train_batch_size, torch.stack)


def images_per_second(batches, count: int, batch_size: int) -> float:
    next(batches)  # the first batch fills the shuffle buffer or builds the sampler: not a steady-state figure
    start = time.perf_counter()
    for _ in itertools.islice(batches, count):
        pass
    return count * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_parquet", nargs="+", required=True)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--shuffle_buffer_size", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4, help="Decoding threads of the second streaming figure.")
    args = parser.parse_args()
    args.dataset_name = args.train_data_dir = args.train_webdataset = args.max_train_samples = None
    transform = image_transform(args.resolution, args.channels)
    files = expand_data_files(args.train_parquet, "--train_parquet")
    rates = {
        "in memory": images_per_second(in_memory_batches(files, args.train_batch_size, transform), args.batches,
                                       args.train_batch_size),  # fmt: skip
        **{f"streaming, {threads} decoding threads": images_per_second(
            streaming_batches(args, transform, threads), args.batches, args.train_batch_size
        ) for threads in (0, args.threads)},
    }  # fmt: skip
    print(f"torch threads: {torch.get_num_threads()}; batch {args.train_batch_size}, {args.batches} batches")
    for name, rate in rates.items():
        print(f"{name:>30}: {rate:,.0f} images/s ({rate / rates['in memory']:.2f}x in memory)")


if __name__ == "__main__":
    main()
