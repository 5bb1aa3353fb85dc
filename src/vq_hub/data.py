"""Images in, tensors out: dataset loading, pixel transforms and picture grids (no torchvision needed)."""

from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def shipped_fashion_mnist() -> Path:
    """Path of the 1,000-image Fashion-MNIST subset (MIT) that ships with the package."""
    return Path(str(resources.files("vq_hub") / "assets" / "fashion_mnist_mini" / "train.parquet"))


def shipped_fashion_mnist_splits(validation_fraction: float = 0.1, seed: int = 0) -> dict:
    """The shipped subset split at random (seeded, so every script sees the same split) into `train` and
    `validation`: what the example scripts train and validate on when no data is given."""
    split = load_parquet_images(shipped_fashion_mnist()).train_test_split(test_size=validation_fraction, seed=seed)
    return {"train": split["train"], "validation": split["test"]}


SHIPPED_DATA_NOTE = ("no data flag given: using the 1,000-image Fashion-MNIST subset shipped with vq_hub (MIT), 900 "
                     "images to train and 100 to validate (a seeded split)")  # fmt: skip


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    parquet_files: list[str] | str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
):
    """A `datasets.Dataset` from exactly one source: a Hub dataset (`dataset_name`), an imagefolder (`data_dir`) or
    Parquet files with an image column (`parquet_files`)."""
    from datasets import load_dataset

    sources = [name for name, value in [("dataset_name", dataset_name), ("data_dir", data_dir),
                                        ("parquet_files", parquet_files)] if value]  # fmt: skip
    if len(sources) != 1:
        raise ValueError(f"give exactly one of `dataset_name`, `data_dir`, `parquet_files`; got {sources or 'none'}")
    if dataset_name:
        return load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    if data_dir:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"`data_dir` {data_dir!r} is not a folder")
        return load_dataset("imagefolder", data_dir=data_dir, split="train", cache_dir=cache_dir)
    return read_parquet([parquet_files] if isinstance(parquet_files, (str, Path)) else list(parquet_files))


def read_parquet(files: list[str | Path], argument: str = "parquet_files"):
    """A `datasets.Dataset` held in memory from local Parquet files, with the features `datasets` recorded in them
    (images decode as images): no "Generating train split" step and no cache written under the home folder, which a
    `load_dataset("parquet", …)` call would do for files that are already on disk."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [str(file) for file in files if not Path(file).is_file()]
    if missing:
        raise FileNotFoundError(f"`{argument}` not found: {missing}")
    table = pa.concat_tables([pq.read_table(file) for file in files])
    features = datasets.Features.from_arrow_schema(table.schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features))


def image_size(resolution) -> tuple[int, int]:
    """`(height, width)` of a resolution given as one int (square), `[height, width]` or `(height, width)`."""
    if isinstance(resolution, (list, tuple)):
        if len(resolution) == 1:
            resolution = resolution[0]
        elif len(resolution) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in resolution):
            return int(resolution[0]), int(resolution[1])
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        return resolution, resolution
    raise ValueError(f"`resolution` must be an int or (height, width), got {resolution!r}")


def image_transform(resolution: int | tuple[int, int], channels: int, image_column: str = "image"):
    """A `Dataset.set_transform` function adding `pixel_values` (C, H, W) in [-1, 1] (`resolution`: an int for
    square images, or (height, width))."""

    def transform(batch: dict) -> dict:
        if image_column not in batch:
            raise ValueError(f"the dataset has no column {image_column!r} (`image_column`); columns: {list(batch)}")
        batch["pixel_values"] = [image_to_tensor(image, resolution, channels) for image in batch[image_column]]
        return batch

    return transform


def load_parquet_images(path: str | Path):
    """A `datasets.Dataset` from a Parquet file with an `image` column (and usually `label`)."""
    return read_parquet([path], argument="path")


def image_to_tensor(image: Image.Image, resolution: int | tuple[int, int], channels: int = 3) -> torch.Tensor:
    """A PIL image → `(channels, H, W)` float tensor in [-1, 1]; `resolution` is an int (square) or (H, W).

    Images that fit inside H×W are padded with black around the centre (so 28×28 Fashion-MNIST keeps every pixel at
    32×32); larger ones are resized to cover H×W (the shorter side, for a square) and centre-cropped.
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grayscale) or 3 (RGB), got {channels}")
    height, width = image_size(resolution)
    image = image.convert("L" if channels == 1 else "RGB")
    image_width, image_height = image.size
    if image_width <= width and image_height <= height:
        canvas = Image.new(image.mode, (width, height))
        canvas.paste(image, ((width - image_width) // 2, (height - image_height) // 2))
        image = canvas
    else:
        scale = max(width / image_width, height / image_height)
        image = image.resize((max(width, round(image_width * scale)), max(height, round(image_height * scale))),
                             Image.Resampling.BICUBIC)  # fmt: skip
        left, top = (image.size[0] - width) // 2, (image.size[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32).reshape(height, width, channels)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """A `(B, C, H, W)` tensor in [-1, 1] → B PIL images (grayscale for one channel)."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    if array.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in array]
    return [Image.fromarray(a, mode="RGB") for a in array]


def image_grid(rows: list[torch.Tensor], padding: int = 2) -> Image.Image:
    """Tile batches `(B, C, H, W)` in [-1, 1] into one picture, one batch per row (e.g. originals above
    reconstructions)."""
    columns = max(len(row) for row in rows)
    height, width = rows[0].shape[-2:]
    mode = "L" if rows[0].shape[1] == 1 else "RGB"
    grid = Image.new(mode, (columns * (width + padding) + padding, len(rows) * (height + padding) + padding))
    for r, row in enumerate(rows):
        for c, image in enumerate(tensor_to_images(row)):
            grid.paste(image, (padding + c * (width + padding), padding + r * (height + padding)))
    return grid


def label_rows(grid: Image.Image, labels: list[str], row_height: int, padding: int = 2) -> Image.Image:
    """`grid` (rows of `row_height` pixels after `padding`, as `image_grid` lays them out) with a margin on the left
    that names each row (a class name or a prompt), in PIL's built-in font."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    sizes = [measure.textbbox((0, 0), text, font=font) for text in labels]
    margin = max((right - left for left, _, right, _ in sizes), default=0) + 3 * padding
    labelled = Image.new(grid.mode, (grid.width + margin, grid.height))
    labelled.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    white = 255 if grid.mode == "L" else (255, 255, 255)
    for row, (text, (_, top, _, bottom)) in enumerate(zip(labels, sizes)):
        centre = padding + row * (row_height + padding) + row_height / 2
        draw.text((padding, centre - (bottom + top) / 2), text, fill=white, font=font)
    return labelled


# ------------------------------------------------------------------------------------------------- code datasets
# `examples/encode_dataset.py` writes a folder with one Parquet file per split (columns `codes`: h·w ints in raster
# order, `label`: int, -1 when the images had none, optionally captions) and ENCODING_INFO with what a prior needs to
# know about them. A split may also hold `prefix_ids` (and `prefix_mask`): the condition prefix of each grid.

ENCODING_INFO = "encoding.json"
PREFIX_COLUMNS = ("prefix_ids", "prefix_mask")
# Each row's caption as an index into text-encoder states computed once per caption (train_prior.py / train_diffusion.py
# with a text encoder).
CAPTION_INDEX_COLUMN = "caption_index"
CONDITION_COLUMNS = (*PREFIX_COLUMNS, CAPTION_INDEX_COLUMN)


def code_split_files(folder: str | Path, split: str) -> tuple[list[Path] | None, dict]:
    """`(files, info)`: the Parquet files of a split of an encoded dataset — `{split}.parquet`, or the code shards
    encoding.json lists (`encode_dataset.py --chunk_size`) — and its encoding.json; files None without that split."""
    import json

    folder = Path(folder)
    info_file = folder / ENCODING_INFO
    if not info_file.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an encoded dataset: expected {ENCODING_INFO} (write it with "
                                "examples/encode_dataset.py)")  # fmt: skip
    info = json.loads(info_file.read_text())
    if "shards" in info:
        files = [folder / name for name in info["shards"].get(split, [])]
    else:
        files = [folder / f"{split}.parquet"] if (folder / f"{split}.parquet").is_file() else []
    return files or None, info


def load_code_dataset(folder: str | Path, split: str = "train", level: str | None = None, streaming: bool = False):
    """`(dataset, info)`: a split of an encoded dataset (one file or its shards, read as one dataset) and its
    encoding.json; for a two-level encoding, the view of `level` (see `select_code_level`). In memory the dataset has
    torch-formatted `codes`, `label` and prefix columns (other columns, such as captions, stay readable through
    `dataset.with_format(None)`); with `streaming`, it is a `datasets.IterableDataset` of plain rows."""
    files, info = code_split_files(folder, split)
    if files is None:
        raise FileNotFoundError(f"{str(folder)!r} has no {split!r} split: expected {split}.parquet or its shards "
                                f"listed in {ENCODING_INFO} (write them with examples/encode_dataset.py)")  # fmt: skip
    if streaming:
        from datasets import load_dataset

        dataset = load_dataset("parquet", data_files=[str(file) for file in files], split="train", streaming=True)
        return select_code_level(dataset, info, level)
    dataset, info = select_code_level(read_parquet(files), info, level)
    set_code_format(dataset)
    return dataset, info


def select_code_level(dataset, info: dict, level: str | None):
    """`(dataset, info)` as a prior over one level of codes sees them. A single-level encoding is returned as it is
    (`level` None). A two-level (VQ-VAE-2) encoding has `top_codes` and `bottom_codes`: for `level="top"` the top
    codes become `codes`; for `level="bottom"` the bottom codes become `codes` and the top codes `prefix_ids`, a
    prefix of condition tokens from a second vocabulary (the top codebook). `info` gets the level's `codebook_size`
    and `code_grid_size` (and `prefix_vocab_size`, `prefix_length`), as a single-level encoding records them."""
    levels = info.get("levels")
    if levels is None:
        if level not in (None, "codes"):
            raise ValueError(f"`level` {level!r} was given, but the codes are of a single-level tokenizer")
        return dataset, info
    if level not in levels:
        raise ValueError(f"these codes have the levels {levels} (a two-level tokenizer): choose one with `level` "
                         f"(--level in the prior scripts), got {level!r}")  # fmt: skip
    info = {**info, "level": level, "codebook_size": info["codebook_sizes"][level],
            "code_grid_size": info["code_grid_sizes"][level]}  # fmt: skip
    dataset = dataset.rename_column(f"{level}_codes", "codes")
    coarser = levels[levels.index(level) - 1] if levels.index(level) > 0 else None
    if coarser is not None:
        height, width = info["code_grid_sizes"][coarser]
        info.update(prefix_vocab_size=info["codebook_sizes"][coarser], prefix_length=height * width)
        dataset = dataset.rename_column(f"{coarser}_codes", "prefix_ids")
    finer = [f"{name}_codes" for name in levels[levels.index(level) + 1 :]]
    return dataset.remove_columns(finer) if finer else dataset, info


def set_code_format(dataset) -> None:
    """Torch format for the columns a prior trains on: `codes`, `label` and the prefix / caption-index columns
    present."""
    columns = [column for column in CONDITION_COLUMNS if column in dataset.column_names]
    dataset.set_format("torch", columns=["codes", "label", *columns])


def collate_codes(examples: list[dict]) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Rows of an encoded dataset → `(codes (B, h·w), labels (B,))` as int64."""
    codes = torch.stack([example["codes"] for example in examples]).long()
    labels = torch.stack([torch.as_tensor(example["label"]) for example in examples]).long()
    return codes, labels


def collate_code_batch(examples: list[dict]) -> dict[str, torch.LongTensor]:
    """Rows of an encoded dataset → `{"codes": (B, h·w), "labels": (B,)}`, plus `"prefix_ids"` / `"prefix_mask"`
    `(B, L)` and `"caption_index"` `(B,)` when the rows have them, all int64."""
    codes, labels = collate_codes(examples)
    batch = {"codes": codes, "labels": labels}
    for column in CONDITION_COLUMNS:
        if column in examples[0]:
            batch[column] = torch.stack([torch.as_tensor(example[column]) for example in examples]).long()
    return batch


def square_grid(images: torch.Tensor, padding: int = 2) -> Image.Image:
    """A batch `(B, C, H, W)` in [-1, 1] as one square-ish picture: ⌈√B⌉ images per row."""
    columns = max(1, int(np.ceil(np.sqrt(len(images)))))
    return image_grid([images[start : start + columns] for start in range(0, len(images), columns)], padding)


def tile_images(images: list[Image.Image], padding: int = 2) -> Image.Image:
    """PIL images of one size side by side in one row."""
    width, height = images[0].size
    row = Image.new(images[0].mode, (len(images) * (width + padding) + padding, height + 2 * padding))
    for index, image in enumerate(images):
        row.paste(image, (padding + index * (width + padding), padding))
    return row


def save_gif(frames: list[list[Image.Image]], path: str | Path, duration_ms: int = 120, hold_last_ms: int = 1500,
             scale: int = 4) -> Path:  # fmt: skip
    """An animated GIF, one frame per step, each frame the step's images side by side (e.g. a diffusion pipeline's
    `intermediates`); the last frame is held so the result can be seen."""
    tiles = [tile_images(images) for images in frames]
    tiles = [tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST) for tile in tiles]
    durations = [duration_ms] * (len(tiles) - 1) + [hold_last_ms]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tiles[0].save(path, save_all=True, append_images=tiles[1:], duration=durations, loop=0)
    return path
