"""Does a generated scene show what its caption says? The offline analogue of a CLIP score for the captioned
Fashion-MNIST scenes (`examples/make_captioned_scenes.py`): a scene is a row of slots, each empty or holding one
tinted item; a classifier trained on the training scenes' slots reads the item of each slot, and the colour and
whether a slot is empty are read from its pixels.

Figures (`faithfulness`), over the images of a set of captions:

- items: slots whose item (or emptiness) is the caption's;
- colours: captioned items whose slot shows the captioned colour;
- positions: captioned items drawn on the captioned side, among those drawn on either side (a swapped pair counts
  against it, a missing item does not: that is `items`);
- scenes: images right in every slot — item and colour.
"""

from collections.abc import Sequence

import numpy as np
import torch

EMPTY = ""


def slot_crops(images: torch.Tensor, num_slots: int = 2) -> torch.Tensor:
    """`(B, C, H, W)` scenes → `(B, num_slots, C, H, W / num_slots)`: the slots side by side, left to right."""
    if images.ndim != 4 or images.shape[-1] % num_slots:
        raise ValueError(f"`images` must be (B, C, H, W) with W divisible by {num_slots}, got {tuple(images.shape)}")
    return torch.stack(images.chunk(num_slots, dim=-1), dim=1)


def slot_intensity(crops: torch.Tensor) -> torch.Tensor:
    """RGB slots `(..., 3, h, w)` in [-1, 1] → grayscale `(..., 1, h, w)` in [-1, 1]: the brightest channel, which
    undoes the tint (every palette colour has a channel near full), so the item classifier sees shapes, not colours,
    and reads a green t-shirt as well as the red ones it was trained on."""
    return crops.amax(dim=-3, keepdim=True)


def read_colours(crops: torch.Tensor, palette: dict[str, Sequence[int]], threshold: float = 0.3,
                 min_pixels: int = 16) -> list[list[str]]:  # fmt: skip
    """The colour name of each slot `(B, S, 3, h, w)` in [-1, 1], or EMPTY when fewer than `min_pixels` pixels have a
    channel above `threshold` (in [0, 1]): the mean chromaticity (RGB over its brightest channel) of the bright
    pixels, nearest to a palette colour's."""
    names = list(palette)
    reference = torch.tensor([palette[name] for name in names], dtype=torch.float32)
    reference = reference / reference.amax(dim=1, keepdim=True)
    pixels = ((crops.float() + 1) / 2).clamp(0, 1).flatten(-2)  # (B, S, 3, h·w)
    brightest = pixels.amax(dim=-2)  # (B, S, h·w)
    bright = brightest > threshold
    chroma = pixels / brightest.clamp(min=1e-6)[..., None, :]
    mean = (chroma * bright[..., None, :]).sum(-1) / bright.sum(-1, keepdim=True).clamp(min=1)  # (B, S, 3)
    nearest = torch.cdist(mean.flatten(0, 1), reference).argmin(dim=1).view(mean.shape[:2])
    empty = bright.sum(-1) < min_pixels
    return [[EMPTY if empty[b, s] else names[int(nearest[b, s])] for s in range(mean.shape[1])]
            for b in range(mean.shape[0])]  # fmt: skip


@torch.no_grad()
def read_scenes(images: torch.Tensor, classifier, palette: dict[str, Sequence[int]], num_slots: int = 2,
                threshold: float = 0.3, min_pixels: int = 16) -> tuple[list[list[str]], list[list[str]], torch.Tensor]:  # fmt: skip
    """`(items, colours, features)` of scenes `(B, 3, H, W)` in [-1, 1]: per slot the item the `classifier` (an
    `ImageClassifier` over grayscale slots, `class_names` = item words) reads and the colour read from the pixels
    (EMPTY for both in an empty slot), and the classifier's features of all slots side by side `(B, S·d)` (for FID)."""
    crops = slot_crops(images, num_slots)
    colours = read_colours(crops, palette, threshold, min_pixels)
    grayscale = slot_intensity(crops).flatten(0, 1)
    parameter = next(classifier.parameters())
    output = classifier(grayscale.to(parameter.device, parameter.dtype))
    names = classifier.config.class_names
    predicted = output.logits.argmax(dim=1).view(len(images), num_slots).cpu()
    items = [[EMPTY if colours[b][s] == EMPTY else names[int(predicted[b, s])] for s in range(num_slots)]
             for b in range(len(images))]  # fmt: skip
    features = output.features.float().view(len(images), -1).cpu()
    return items, colours, features


def faithfulness(items: list[list[str]], colours: list[list[str]], expected_items: list[list[str]],
                 expected_colours: list[list[str]]) -> dict[str, float]:  # fmt: skip
    """Items, colours, positions and whole scenes right (see the module docstring), as fractions in [0, 1], with the
    number of images."""
    if not len(items) == len(colours) == len(expected_items) == len(expected_colours):
        raise ValueError("`items`, `colours`, `expected_items` and `expected_colours` must have one row per image")
    slots_right, captioned, colours_right, placed, misplaced, scenes_right = 0, 0, 0, 0, 0, 0
    num_slots = 0
    for read, tint, wanted, wanted_tint in zip(items, colours, expected_items, expected_colours):
        num_slots += len(wanted)
        slots_right += sum(a == b for a, b in zip(read, wanted))
        scene_right = True
        for slot, item in enumerate(wanted):
            scene_right &= read[slot] == item and (item == EMPTY or tint[slot] == wanted_tint[slot])
            if item == EMPTY:
                continue
            captioned += 1
            colours_right += tint[slot] == wanted_tint[slot]
            elsewhere = [other for other in range(len(wanted)) if other != slot and wanted[other] != item]
            if read[slot] == item:
                placed += 1
            elif any(read[other] == item for other in elsewhere):
                misplaced += 1
        scenes_right += scene_right
    return {
        "items": slots_right / max(num_slots, 1),
        "colours": colours_right / max(captioned, 1),
        "positions": placed / max(placed + misplaced, 1),
        "scenes": scenes_right / max(len(items), 1),
        "num_images": len(items),
    }


def scene_attributes(rows: dict[str, list], sides: Sequence[str] = ("left", "right")) -> tuple[list, list]:
    """`(items, colours)` per scene from the dataset's columns (`left_item`, `left_colour`, …)."""
    items = np.stack([rows[f"{side}_item"] for side in sides], axis=1).tolist()
    colours = np.stack([rows[f"{side}_colour"] for side in sides], axis=1).tolist()
    return items, colours
