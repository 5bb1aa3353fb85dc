"""Evaluating a text-to-image pipeline on prompts: one image per prompt, FID against real images of the same kind
(a captioned split), and, when a composition scorer fits the data, how faithfully the images show their captions.

The captioned scenes (`examples/make_captioned_scenes.py`) are rows of square slots; the feature network is a slot
classifier (`checkpoints/scenes-slot-classifier`) whose features of every slot, side by side, are a scene's features.
The composition scorer (`composition.faithfulness`) fits when the split records each slot's item and colour
(`left_item`, `left_colour`, …), a `scenes.json` beside it gives the colour palette, the prompts are the split's own
captions, and the classifier knows every item. `vq-hub evaluate`, the training scripts' validation and
`examples/evaluate_text_to_image.py` call these functions.
"""

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .composition import faithfulness, read_scenes, scene_attributes, slot_crops, slot_intensity
from .metrics import frechet_distance
from .reference import ReferenceStatistics

SHIPPED_SLOT_CLASSIFIER = "scenes-slot-classifier"


@dataclass
class CaptionedSplit:
    """Real images `(N, 3, H, W)` in [-1, 1] with their captions; per slot items and colours and the palette when
    the split records them (else `None`)."""

    images: torch.Tensor
    captions: list[str]
    items: list[list[str]] | None = None
    colours: list[list[str]] | None = None
    palette: dict | None = None
    source: str = ""


def load_captioned_split(path: str | Path, limit: int | None = None) -> CaptionedSplit:
    """A Parquet file with `image` and `caption` columns (the first `limit` rows), with the slots' `*_item` /
    `*_colour` columns and a `scenes.json` palette beside it when present."""
    import pyarrow.parquet as pq
    from PIL import Image

    from ..data import image_to_tensor

    path = Path(path).expanduser()
    table = pq.read_table(path)
    missing = [column for column in ("image", "caption") if column not in table.column_names]
    if missing:
        raise ValueError(f"{path}: a captioned split needs `image` and `caption` columns; missing {missing}")
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pydict()
    pictures = [Image.open(io.BytesIO(cell["bytes"] if isinstance(cell, dict) else cell)) for cell in rows["image"]]
    if not pictures:
        raise ValueError(f"{path}: the split has no rows")
    height, width = pictures[0].height, pictures[0].width
    images = torch.stack([image_to_tensor(picture, (height, width), 3) for picture in pictures])
    items = colours = palette = None
    if all(f"{side}_{what}" in rows for side in ("left", "right") for what in ("item", "colour")):
        items, colours = scene_attributes(rows)
        info = path.with_name("scenes.json")
        if info.is_file():
            palette = json.loads(info.read_text()).get("colours")
    return CaptionedSplit(images, list(rows["caption"]), items, colours, palette, str(path))


def num_slots_for(classifier, image_shape) -> int:
    """How many classifier-sized square slots side by side make an image of `(C, H, W)`; a ValueError when the
    images are not such rows (the slot classifier does not fit them)."""
    _, height, width = image_shape
    size = classifier.config.sample_size
    if height != size or width % size:
        raise ValueError(f"the slot classifier reads {size}×{size} slots; {height}×{width} images are not a row of "
                         "them: pass a feature network that fits these images")  # fmt: skip
    return width // size


@torch.no_grad()
def scene_features(images: torch.Tensor, classifier, batch_size: int = 256) -> torch.Tensor:
    """`(N, S·d)`: the slot classifier's features of every slot of `images` `(N, 3, H, W)` in [-1, 1], side by side
    (the grayscale of the brightest channel, as `composition.read_scenes` reads them)."""
    slots = num_slots_for(classifier, images.shape[1:])
    parameter = next(classifier.parameters())
    features = []
    for start in range(0, len(images), batch_size):
        batch = slot_intensity(slot_crops(images[start : start + batch_size], slots)).flatten(0, 1)
        output = classifier(batch.to(parameter.device, parameter.dtype))
        features.append(output.features.float().view(-1, slots * output.features.shape[-1]).cpu())
    return torch.cat(features)


def generate_from_prompts(pipe, prompts: list[str], batch_size: int = 100, seed: int = 0,
                          **call_kwargs) -> tuple[torch.Tensor, float]:  # fmt: skip
    """`(images (N, 3, H, W) in [-1, 1], seconds)`: one image per prompt; batch b is drawn with a generator seeded
    `seed + b` (same seed and batch size, same images)."""
    if not prompts:
        raise ValueError("`prompts` is empty: give at least one prompt")
    pipe.set_progress_bar_config(disable=True)
    images, start_time = [], time.perf_counter()
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        output = pipe(prompt=list(prompts[start : start + batch_size]), output_type="pt",
                      generator=torch.Generator(pipe.device).manual_seed(seed + index), **call_kwargs)  # fmt: skip
        images.append(output.images.float().cpu() * 2 - 1)
    return torch.cat(images), time.perf_counter() - start_time


def composition_fits(split: CaptionedSplit | None, classifier, prompts_are_captions: bool) -> str | None:
    """Why the composition scorer does not fit (a sentence), or None when it does."""
    if split is None or not prompts_are_captions:
        return "the prompts are not a split's captions with their slots recorded"
    if split.items is None:
        return f"{split.source} records no slot items and colours (left_item, left_colour, …)"
    if not split.palette:
        return f"no scenes.json with the colour palette beside {split.source}"
    names = set(getattr(classifier.config, "class_names", None) or [])
    unknown = sorted({item for row in split.items for item in row if item} - names)
    if unknown:
        return f"the classifier does not know the items {unknown}"
    return None


def evaluate_text_to_image(
    pipe,
    prompts: list[str],
    classifier,
    reference_images: torch.Tensor,
    split: CaptionedSplit | None = None,
    batch_size: int = 100,
    seed: int = 0,
    network_name: str = SHIPPED_SLOT_CLASSIFIER,
    **call_kwargs,
) -> dict:
    """Draw one image per prompt and score them: FID of the slot classifier's scene features against
    `reference_images` (real images, e.g. the split's), and with a fitting `split` whose first captions are the
    `prompts`, the faithfulness figures (items, colours, positions, scenes) of the images and, as the scorer's ceiling,
    of the real scenes of those captions. Returns a flat dict naming the network and the reference."""
    if len(reference_images) < 2:
        raise ValueError("FID needs at least 2 reference images")
    height, width = pipe.resolution
    num_slots_for(classifier, (3, height, width))  # before sampling: a network that does not fit fails at once
    images, seconds = generate_from_prompts(pipe, prompts, batch_size, seed, **call_kwargs)
    real_features = scene_features(reference_images, classifier, batch_size)
    reference = ReferenceStatistics.from_features(real_features, max_features=len(real_features))
    features = scene_features(images, classifier, batch_size)
    report = {key: value for key, value in call_kwargs.items() if value is not None}
    report.update(fid=frechet_distance(reference, features), num_images=len(images),
                  num_reference_images=len(reference_images), seconds_per_image=seconds / len(images), seed=seed,
                  batch_size=batch_size, pipeline=type(pipe).__name__)  # fmt: skip
    captions = split is not None and list(split.captions[: len(prompts)]) == list(prompts)
    why_not = composition_fits(split, classifier, captions)
    if why_not is None:
        expected = (split.items[: len(prompts)], split.colours[: len(prompts)])
        slots = num_slots_for(classifier, images.shape[1:])
        items, colours, _ = read_scenes(images, classifier, split.palette, num_slots=slots)
        report.update({key: value for key, value in faithfulness(items, colours, *expected).items()
                       if key != "num_images"})  # fmt: skip
        real_items, real_colours, _ = read_scenes(split.images[: len(prompts)], classifier, split.palette, slots)
        ceiling = faithfulness(real_items, real_colours, *expected)
        report.update({f"real_{key}": value for key, value in ceiling.items() if key != "num_images"})
    else:
        report["faithfulness_note"] = f"not computed: {why_not}"
    report["feature_network"] = {"name": network_name,
                                 "kind": "vq_hub ImageClassifier over scene slots (not Inception v3)",
                                 "dataset": getattr(classifier.config, "dataset", None)}  # fmt: skip
    report["reference"] = {"source": split.source if split is not None else None,
                           "num_images": len(reference_images)}  # fmt: skip
    return report
