"""Encode an image dataset into code grids once, for training priors (processes share the work with Accelerate).

    accelerate launch examples/encode_dataset.py --vqvae_name_or_path vqgan-fashion \
        --train_parquet ../shared/data/fashion_mnist/train.parquet \
        --validation_parquet ../shared/data/fashion_mnist/test.parquet --output_dir codes-fashion

writes `codes-fashion/{train,validation}.parquet` (columns `codes`: h·w ints in raster order, `label`, and the
captions with `--caption_column`) and `codes-fashion/encoding.json`; `train_prior.py` and `train_diffusion.py` read
them. The same inputs always give the same codes. With no arguments it encodes the subset shipped with vq_hub with
the shipped tokenizer into codes-output/, which the prior scripts read by default. A two-level tokenizer (VQ-VAE-2)
writes one column per level, `top_codes` and `bottom_codes`, and records each level's grid and codebook in
encoding.json (`levels`, `code_grid_sizes`, `codebook_sizes`).

With `--chunk_size N` each process writes its codes as shards of N grids, `codes-fashion/train/chunk-…-process-…
.parquet`, each appearing complete or not at all; a rerun (the same command, as many processes) skips the chunks
already written, and encoding.json, written last, lists the shards. `--streaming` reads the images as a stream
(`--dataset_name`, Parquet or WebDataset shards) and needs `--chunk_size`.
"""

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from vq_hub import VQVAEModel, load_tokenizer
from vq_hub.code_levels import (
    CODE_ORDER, code_depths, code_grid_sizes, codebook_sizes, codes_to_sequence, column_name, level_names,
    tokenize_levels,
)  # fmt: skip
from vq_hub.data import (
    ENCODING_INFO, SHIPPED_DATA_NOTE, image_size, image_transform, load_image_dataset, shipped_fashion_mnist_splits,
)  # fmt: skip
from vq_hub.code_shards import list_shards, shard_name, shard_rows, write_shard, written_chunks
from vq_hub.streaming import (
    ProcessStream, add_streaming_arguments, check_streaming_arguments, known_length, stream_source,
)  # fmt: skip
from vq_hub.utils.io import atomic_directory, write_text_atomically

SHIPPED_TOKENIZER = Path(__file__).resolve().parents[1] / "checkpoints" / "fashion-mnist-vqvae"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vqvae_name_or_path", default=str(SHIPPED_TOKENIZER),
                        help="A saved tokenizer, VQVAEModel or HierarchicalVQModel (folder or Hub id); by default the "
                        "tokenizer shipped in checkpoints/.")  # fmt: skip
    parser.add_argument("--dataset_name", help="A dataset on the Hub (or a local dataset script/folder).")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--train_data_dir", help="An imagefolder with the training images.")
    parser.add_argument("--train_parquet", nargs="+", help="Parquet file(s) with an image column.")
    parser.add_argument("--validation_parquet", nargs="+")
    parser.add_argument("--validation_data_dir")
    parser.add_argument("--validation_split", help="Split of --dataset_name encoded as validation, e.g. 'test'.")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label", help="Class labels; -1 is written when it is missing.")
    parser.add_argument("--caption_column", help="Text captions, stored beside the codes under the same name (for "
                        "text-to-image priors: train_prior.py / train_diffusion.py --caption_column).")  # fmt: skip
    parser.add_argument("--resolution", type=int, nargs="+", help="Image size: one number (square) or height and "
                        "width (default: the tokenizer's sample_size).")  # fmt: skip
    parser.add_argument("--max_samples", type=int, help="Encode at most this many images per split.")
    parser.add_argument("--batch_size", type=int, default=256, help="Per process.")
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"],
                        help="Encode under autocast (the quantizer's distances stay float32; codes can differ from "
                        "float32 ones only where two codes are nearly equally near). Default: accelerate's config.")
    parser.add_argument("--cache_dir")
    parser.add_argument("--output_dir", default="codes-output", help="Where the encoded splits go (one folder).")
    parser.add_argument("--chunk_size", type=int, help="Write each process's codes as shards of this many grids; a "
                        "rerun resumes at the first shard not written.")  # fmt: skip
    add_streaming_arguments(parser)
    args = parser.parse_args(argv)
    sources = sum(bool(x) for x in (args.dataset_name, args.train_data_dir, args.train_parquet, args.train_webdataset))
    if sources > 1:
        parser.error("give at most one of --dataset_name, --train_data_dir, --train_parquet, --train_webdataset")
    check_streaming_arguments(parser, args, training=False)
    if args.streaming and not args.chunk_size:
        parser.error("--streaming writes code shards: give --chunk_size")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error(f"--chunk_size must be ≥ 1, got {args.chunk_size}")
    if args.resolution is not None and len(args.resolution) > 2:
        parser.error("--resolution takes one number (square images) or two (height width)")
    args.use_shipped_data = sources == 0  # the bare command encodes the subset the package ships
    return args


def load_splits(args: argparse.Namespace) -> dict[str, datasets.Dataset]:
    if args.use_shipped_data:
        return shipped_fashion_mnist_splits()
    splits = {"train": stream_source(args) if args.streaming else load_image_dataset(
        args.dataset_name, args.dataset_config_name, args.train_data_dir, args.train_parquet, cache_dir=args.cache_dir
    )}  # fmt: skip
    if args.streaming and args.validation_split:
        splits["validation"] = stream_source(args, split=args.validation_split)
    elif args.validation_parquet or args.validation_data_dir or args.validation_split:
        splits["validation"] = load_image_dataset(
            args.dataset_name if args.validation_split else None, args.dataset_config_name,
            args.validation_data_dir, args.validation_parquet, split=args.validation_split or "train",
            cache_dir=args.cache_dir,
        )  # fmt: skip
    if args.max_samples:  # (a stream keeps its first rows in `stream_source`)
        splits = {name: split.select(range(min(args.max_samples, len(split)))) if isinstance(split, datasets.Dataset)
                  else split for name, split in splits.items()}  # fmt: skip
    return splits


def num_classes_of(dataset: datasets.Dataset, label_column: str, labels=None) -> int:
    """From a ClassLabel feature when there is one, else the largest label + 1 (0 without labels); `labels`: the
    encoded labels, when the dataset is a stream."""
    if label_column not in (dataset.column_names or []):
        return 0
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    return int(max(dataset[label_column] if labels is None else labels)) + 1


def class_names_of(dataset: datasets.Dataset, label_column: str) -> list[str] | None:
    """The names of a ClassLabel feature (the prior records them: `--class Sneaker`, the demo), else None."""
    feature = dataset.features.get(label_column) if label_column in (dataset.column_names or []) else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


@torch.no_grad()
def encode_split(vqvae: VQVAEModel, dataset: datasets.Dataset, args, accelerator: Accelerator, name: str):
    """`(codes, labels (N,), captions or None)` of every image, `codes` a list with one `(N, h·w·depth)` tensor per level
    (top first), each process encoding its shard, gathered in order (the captions are the dataset's, in the same
    order)."""
    has_labels = args.label_column in dataset.column_names
    captions = None
    if args.caption_column:
        if args.caption_column not in dataset.column_names:
            raise SystemExit(f"--caption_column {args.caption_column}: the {name} split has no such column "
                             f"({dataset.column_names})")  # fmt: skip
        captions = dataset[args.caption_column]

    def collate(examples):
        images = torch.stack([example["pixel_values"] for example in examples])
        labels = [example[args.label_column] if has_labels else -1 for example in examples]
        return images, torch.tensor(labels, dtype=torch.long)

    dataset.set_transform(image_transform(args.resolution, vqvae.config.in_channels, args.image_column))
    loader = accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate))
    all_codes, all_labels = [[] for _ in level_names(vqvae)], []
    start = time.perf_counter()
    for images, labels in tqdm(loader, desc=f"encoding {name}", disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            levels = tokenize_levels(vqvae, images.to(vqvae.dtype))
        for level_codes, codes in zip(all_codes, levels):
            # gather_for_metrics drops the samples repeated to even out the last batch across processes.
            # A residual tokenizer's (B, depth, h, w) codes are stored in the prior's order (code_levels.CODE_ORDER).
            level_codes.append(accelerator.gather_for_metrics(codes_to_sequence(codes)).cpu())
        all_labels.append(accelerator.gather_for_metrics(labels).cpu())
    seconds = time.perf_counter() - start
    if accelerator.is_main_process:  # throughput with the data loading: what a user waits for
        print(f"encoded {name}: {len(dataset):,} images in {seconds:.1f} s ({len(dataset) / seconds:,.0f} images/s "
              f"on {accelerator.num_processes} process(es))", flush=True)  # fmt: skip
    return [torch.cat(level_codes) for level_codes in all_codes], torch.cat(all_labels), captions


def code_table(vqvae, codes: list[torch.Tensor], labels, captions, dtype, caption_column: str | None):
    """The rows written for a split: one column per level of `codes` (h·w ints each), `label`, and the captions."""
    code_feature = datasets.Sequence(datasets.Value(np.dtype(dtype).name))
    columns = {column_name(level): grid.numpy().astype(dtype) for level, grid in zip(level_names(vqvae), codes)}
    features = {**{column: code_feature for column in columns}, "label": datasets.Value("int64")}
    columns["label"] = np.asarray(labels, dtype=np.int64)
    if caption_column:  # rows are encoded in dataset order: the captions line up with the codes
        columns[caption_column] = captions
        features[caption_column] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


@torch.no_grad()
def encode_split_to_shards(vqvae: VQVAEModel, source, args, accelerator: Accelerator, name: str, dtype) -> list[int]:
    """Encode this process's share of `source` (`split_dataset_by_node`, in order) into `output_dir/name/`, one shard
    per `--chunk_size` images, after the chunks a previous run already wrote; returns the labels encoded now."""
    rank, world_size = accelerator.process_index, accelerator.num_processes
    split_dir = Path(args.output_dir) / name
    total = len(source) if isinstance(source, datasets.Dataset) else known_length(source)  # None: count, no total
    if total is not None:  # this process's share (exact when processes keep every N-th row)
        total = min(total, args.max_samples or total)
        total = total // world_size + (rank < total % world_size)
    if isinstance(source, datasets.Dataset):
        source = source.to_iterable_dataset()
    if args.caption_column and args.caption_column not in (source.column_names or [args.caption_column]):
        raise SystemExit(f"--caption_column {args.caption_column}: the {name} split has no such column "
                         f"({source.column_names})")  # fmt: skip
    done = written_chunks(split_dir, rank, world_size, args.chunk_size)
    rows = ProcessStream(source, rank, world_size, seed=0, shuffle_buffer_size=0).epoch_rows(done * args.chunk_size)
    transform = image_transform(args.resolution, vqvae.config.in_channels, args.image_column)
    progress = tqdm(desc=f"encoding {name} (process {rank})", unit="images", total=total,
                    initial=done * args.chunk_size)  # fmt: skip
    labels, start = [], time.perf_counter()
    for chunk in itertools.count(done):
        chunk_rows = list(itertools.islice(rows, args.chunk_size))
        if not chunk_rows:
            break
        codes = [[] for _ in level_names(vqvae)]
        for first in range(0, len(chunk_rows), args.batch_size):
            batch = chunk_rows[first : first + args.batch_size]
            images = torch.stack(transform({key: [row[key] for row in batch] for key in batch[0]})["pixel_values"])
            with accelerator.autocast():
                levels = tokenize_levels(vqvae, images.to(accelerator.device, vqvae.dtype))
            for level_codes, level in zip(codes, levels):
                level_codes.append(codes_to_sequence(level).cpu())  # the prior's order, as `encode_split`
            progress.update(len(batch))
        chunk_labels = [row.get(args.label_column, -1) for row in chunk_rows]
        captions = [row[args.caption_column] for row in chunk_rows] if args.caption_column else None
        table = code_table(vqvae, [torch.cat(level) for level in codes], chunk_labels, captions, dtype,
                           args.caption_column)  # fmt: skip
        write_shard(table, split_dir / shard_name(chunk, rank, world_size))
        labels += chunk_labels
    progress.close()
    seconds = time.perf_counter() - start
    print(f"[process {rank}] encoded {len(labels):,} {name} images in {seconds:.1f} s "
          f"({len(labels) / max(seconds, 1e-9):,.0f} images/s)", flush=True)  # fmt: skip
    totals = accelerator.gather(torch.tensor([[len(labels), seconds]], dtype=torch.float64, device=accelerator.device))
    if accelerator.is_main_process:  # every process encodes at once: the total rate is all images over the slowest
        images, slowest = int(totals[:, 0].sum()), float(totals[:, 1].max())
        print(f"encoded {name}: {images:,} images in {slowest:.1f} s ({images / max(slowest, 1e-9):,.0f} images/s on "
              f"{world_size} process(es))", flush=True)  # fmt: skip
    return labels


def encoding_info(args, vqvae, train, num_examples: dict, train_labels=None) -> dict:
    """encoding.json: the tokenizer, the code grid and codebook (per level for a two-level tokenizer), classes."""
    height, width = image_size(args.resolution)
    levels, grids = level_names(vqvae), code_grid_sizes(vqvae, height, width)
    info = {
        "tokenizer": str(args.vqvae_name_or_path),
        "resolution": args.resolution,
        "num_classes": num_classes_of(train, args.label_column, train_labels),
        "class_names": class_names_of(train, args.label_column),
        "num_examples": num_examples,
    }
    if len(levels) == 1:
        info.update(codebook_size=codebook_sizes(vqvae)[0], code_grid_size=list(grids[0]))
        if code_depths(vqvae)[0] > 1:  # residual codes: h·w·depth per row, each position's depths together
            info.update(code_depth=code_depths(vqvae)[0], code_order=CODE_ORDER)
    else:  # one column per level; `vq_hub.data.select_code_level` gives a prior its level's view
        info.update(levels=list(levels), codebook_sizes=dict(zip(levels, codebook_sizes(vqvae))),
                    code_grid_sizes={level: list(grid) for level, grid in zip(levels, grids)})  # fmt: skip
    if args.caption_column:
        info["caption_column"] = args.caption_column
    return info


def encode_to_shards(vqvae, splits: dict, args, accelerator: Accelerator, dtype) -> dict:
    """`--chunk_size`: every split as code shards (resuming), then encoding.json listing them (the manifest)."""
    import pyarrow.parquet as pq

    for name, split in splits.items():
        try:
            encode_split_to_shards(vqvae, split, args, accelerator, name, dtype)
        except ValueError as error:  # shards of another process count or chunk size
            raise SystemExit(f"--output_dir: {error}") from None
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    shards = {name: list_shards(output_dir / name) for name in splits}
    labels = None  # the largest label, read back from the shards when the labels are no ClassLabel
    if not isinstance((splits["train"].features or {}).get(args.label_column), datasets.ClassLabel):
        labels = pq.read_table([output_dir / "train" / name for name in shards["train"]], columns=["label"])["label"]
        labels = labels.to_pylist()
    info = encoding_info(args, vqvae, splits["train"], {name: shard_rows(output_dir / name, names)
                                                        for name, names in shards.items()}, labels)  # fmt: skip
    info["shards"] = {name: [f"{name}/{shard}" for shard in names] for name, names in shards.items()}
    if accelerator.is_main_process:
        write_text_atomically(output_dir / ENCODING_INFO, json.dumps(info, indent=2))
        print(f"wrote {info['num_examples']} code grids in {sum(map(len, shards.values()))} shards to "
              f"{args.output_dir}", flush=True)  # fmt: skip
    accelerator.wait_for_everyone()
    return info


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.use_shipped_data:
        print(SHIPPED_DATA_NOTE, flush=True)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    vqvae = load_tokenizer(args.vqvae_name_or_path).to(accelerator.device).eval()
    height, width = image_size(args.resolution or vqvae.config.sample_size)
    args.resolution = height if height == width else [height, width]
    if height % vqvae.image_size_multiple or width % vqvae.image_size_multiple:
        raise SystemExit(f"--resolution {height} {width} must be divisible by the tokenizer's downsampling factor "
                         f"{vqvae.image_size_multiple}")  # fmt: skip
    splits = load_splits(args)
    # Codes fit int16 for codebooks up to 32,768 entries: half the disk of int32.
    dtype = np.int16 if max(codebook_sizes(vqvae)) <= np.iinfo(np.int16).max + 1 else np.int32
    if args.chunk_size:
        return encode_to_shards(vqvae, splits, args, accelerator, dtype)
    encoded = {name: encode_split(vqvae, split, args, accelerator, name) for name, split in splits.items()}

    info = encoding_info(args, vqvae, splits["train"], {name: len(labels) for name, (_, labels, _) in encoded.items()})
    if accelerator.is_main_process:
        with atomic_directory(args.output_dir, replaces=["*"]) as staging:  # the folder as a whole: no stale split
            for name, (codes, labels, captions) in encoded.items():
                table = code_table(vqvae, codes, labels.numpy(), captions, dtype, args.caption_column)
                table.to_parquet(str(staging / f"{name}.parquet"))
            (staging / ENCODING_INFO).write_text(json.dumps(info, indent=2))
        shapes = " + ".join(str(list(grid)) for grid in code_grid_sizes(vqvae, height, width))
        print(f"wrote {info['num_examples']} code grids of {shapes} to {args.output_dir}", flush=True)
    accelerator.wait_for_everyone()
    return info


if __name__ == "__main__":
    main()
