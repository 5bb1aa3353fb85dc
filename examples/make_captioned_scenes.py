"""Build the captioned Fashion-MNIST scenes that test whether a text-to-image prior understands composition.

    python examples/make_captioned_scenes.py --fashion_mnist_dir ../shared/data/fashion_mnist \
        --output_dir outputs/scenes

Each scene is a 32×64 RGB picture with two 32×32 slots, left and right; one or two Fashion-MNIST items (MIT) stand in
them, each tinted one of five colours, with a templated caption ("a red sneaker to the left of a blue bag", "a blue
bag on the right and a red sneaker on the left", "green trousers on the left", …). Some combinations never appear in
training: six colour–item pairs (every item loses one colour) and three item pairs. Writes

    train.parquet     scenes of seen combinations, from Fashion-MNIST train images
    test.parquet      scenes of seen combinations, from Fashion-MNIST test images
    heldout.parquet   scenes with at least one held-out combination, from Fashion-MNIST test images
    scenes.json       the vocabulary: items, colours, held-out combinations, templates, counts
    slots_{train,test}.parquet   every filled slot of the train/test scenes as a 32×32 grayscale picture (its
                      brightest channel: the tint undone, as `vq_hub.evaluation.composition.slot_intensity` does) and
                      its item as `label` — the data of the slot classifier that scores generated scenes

with columns `image`, `caption`, `left_item`, `left_colour`, `right_item`, `right_colour` ("" for an empty slot),
`num_items`, `heldout` ("" / "colour" / "pair" / "colour+pair") and `template`. The same seed gives the same files.
"""

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from vq_hub.utils.io import atomic_directory

# Fashion-MNIST classes used, by the word in the captions (the ones that do not look alike: no shirt/pullover/coat).
ITEMS = {"t-shirt": 0, "trousers": 1, "dress": 3, "sandal": 5, "sneaker": 7, "bag": 8}
COLOURS = {
    "red": (255, 40, 40), "green": (40, 220, 40), "blue": (50, 90, 255), "yellow": (240, 220, 30),
    "white": (235, 235, 235),
}  # fmt: skip
HELDOUT_COLOURED_ITEMS = [("green", "t-shirt"), ("yellow", "trousers"), ("blue", "dress"), ("red", "sandal"),
                          ("white", "sneaker"), ("green", "bag")]  # fmt: skip
HELDOUT_ITEM_PAIRS = [("t-shirt", "sandal"), ("dress", "bag"), ("trousers", "sneaker")]  # either order
SINGLE_TEMPLATES = ["{a} on the {side}", "{a} on the {side} side", "{a} in the {side} half", "on the {side} {a}"]
PAIR_TEMPLATES = [
    "{a} to the left of {b}", "{b} to the right of {a}", "{a} on the left and {b} on the right",
    "{b} on the right and {a} on the left", "on the left {a} and on the right {b}",
]  # fmt: skip
SLOT, CANVAS = 32, (32, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fashion_mnist_dir", default="../shared/data/fashion_mnist",
                        help="Folder with Fashion-MNIST train.parquet and test.parquet (image, label).")  # fmt: skip
    parser.add_argument("--test_source", default="test.parquet", help="The file of --fashion_mnist_dir whose "
                        "images make the test and held-out scenes.")  # fmt: skip
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train", type=int, default=30000, help="Training scenes.")
    parser.add_argument("--num_test", type=int, default=2000, help="Test scenes of seen combinations.")
    parser.add_argument("--num_heldout", type=int, default=2000, help="Scenes with held-out combinations.")
    parser.add_argument("--two_item_fraction", type=float, default=0.75, help="Share of scenes with two items.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def heldout_kind(slots: list[tuple[str, str] | None]) -> str:
    """Which held-out combinations a scene holds: "colour" (a held-out colour–item pair), "pair" (a held-out item
    pair), both, or "" (a scene training may see)."""
    items = [slot for slot in slots if slot is not None]
    colour = any(item in HELDOUT_COLOURED_ITEMS for item in items)
    pair = len(items) == 2 and (
        (items[0][1], items[1][1]) in HELDOUT_ITEM_PAIRS or (items[1][1], items[0][1]) in HELDOUT_ITEM_PAIRS
    )
    return "+".join(name for name, found in (("colour", colour), ("pair", pair)) if found)


def article(item: str) -> str:
    return "" if item.endswith("s") else "a "  # "red trousers", "a red bag"


def caption_of(slots: list[tuple[str, str] | None], template: int) -> str:
    """The caption of a scene with `template` (an index into the single-item or the pair templates)."""
    named = [None if slot is None else f"{article(slot[1])}{slot[0]} {slot[1]}" for slot in slots]
    if named[0] and named[1]:
        return PAIR_TEMPLATES[template].format(a=named[0], b=named[1])
    side = "left" if named[0] else "right"
    return SINGLE_TEMPLATES[template].format(a=named[0] or named[1], side=side)


def draw_slots(rng: np.random.Generator, two_items: bool, want_heldout: bool) -> list[tuple[str, str] | None]:
    """Random (colour, item) slots, redrawn until their held-out status is the one wanted."""
    while True:
        slots = [(str(rng.choice(list(COLOURS))), str(rng.choice(list(ITEMS)))) for _ in range(2)]
        if not two_items:
            slots[int(rng.integers(2))] = None
        if bool(heldout_kind(slots)) == want_heldout:
            return slots


def render(slots: list[tuple[str, str] | None], item_images: list[np.ndarray | None]) -> Image.Image:
    """The 32×64 scene: each 28×28 item tinted by its colour, centred in its 32×32 slot, on black."""
    canvas = np.zeros((*CANVAS, 3), dtype=np.float32)
    for index, (slot, item) in enumerate(zip(slots, item_images)):
        if slot is None:
            continue
        tinted = item[..., None].astype(np.float32) / 255 * np.asarray(COLOURS[slot[0]], dtype=np.float32)
        left = index * SLOT + (SLOT - 28) // 2
        canvas[2:30, left : left + 28] = tinted
    return Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))


def load_items(path: Path) -> dict[str, list[np.ndarray]]:
    """Fashion-MNIST images of the classes in ITEMS, as 28×28 uint8 arrays, by item word."""
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    cells = table.column("image").to_pylist()
    by_label = {label: [] for label in ITEMS.values()}
    for cell, label in zip(cells, labels):
        if label in by_label:
            data = cell["bytes"] if isinstance(cell, dict) else cell
            by_label[label].append(np.asarray(Image.open(io.BytesIO(data)).convert("L")))
    return {word: by_label[label] for word, label in ITEMS.items()}


def make_split(rng: np.random.Generator, items: dict[str, list[np.ndarray]], count: int, two_item_fraction: float,
               heldout: bool) -> dict[str, list]:  # fmt: skip
    columns = {name: [] for name in ("image", "caption", "left_item", "left_colour", "right_item", "right_colour",
                                     "num_items", "heldout", "template")}  # fmt: skip
    slots = {"image": [], "label": []}
    for _ in range(count):
        chosen = draw_slots(rng, bool(rng.random() < two_item_fraction), heldout)
        pictures = [None if slot is None else items[slot[1]][int(rng.integers(len(items[slot[1]])))]
                    for slot in chosen]  # fmt: skip
        templates = PAIR_TEMPLATES if all(chosen) else SINGLE_TEMPLATES
        template = int(rng.integers(len(templates)))
        scene = render(chosen, pictures)
        columns["image"].append(png(scene))
        for index, slot in enumerate(chosen):
            if slot is not None:
                crop = np.asarray(scene)[:, index * SLOT : (index + 1) * SLOT].max(axis=2)
                slots["image"].append(png(Image.fromarray(crop)))
                slots["label"].append(list(ITEMS).index(slot[1]))
        columns["caption"].append(caption_of(chosen, template))
        for side, slot in zip(("left", "right"), chosen):
            columns[f"{side}_colour"].append(slot[0] if slot else "")
            columns[f"{side}_item"].append(slot[1] if slot else "")
        columns["num_items"].append(sum(slot is not None for slot in chosen))
        columns["heldout"].append(heldout_kind(chosen))
        columns["template"].append(template)
    return columns, slots


def png(image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_parquet(columns: dict[str, list], path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    def feature(name: str):
        if name == "image":
            return ImageFeature()
        if name == "label":
            return ClassLabel(names=list(ITEMS))
        return Value("int64" if name in ("num_items", "template") else "string")

    features = Features({name: feature(name) for name in columns})
    Dataset.from_dict(columns, features=features).to_parquet(str(path))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    source = Path(args.fashion_mnist_dir)
    rng = np.random.default_rng(args.seed)
    train_items, test_items = load_items(source / "train.parquet"), load_items(source / args.test_source)
    splits = {
        "train": make_split(rng, train_items, args.num_train, args.two_item_fraction, heldout=False),
        "test": make_split(rng, test_items, args.num_test, args.two_item_fraction, heldout=False),
        "heldout": make_split(rng, test_items, args.num_heldout, args.two_item_fraction, heldout=True),
    }
    info = {
        "items": ITEMS, "colours": COLOURS, "canvas": list(CANVAS), "slot": SLOT,
        "heldout_coloured_items": HELDOUT_COLOURED_ITEMS, "heldout_item_pairs": HELDOUT_ITEM_PAIRS,
        "single_templates": SINGLE_TEMPLATES, "pair_templates": PAIR_TEMPLATES,
        "num_scenes": {name: len(columns["caption"]) for name, (columns, _) in splits.items()}, "seed": args.seed,
        "source": "Fashion-MNIST (MIT): train images → train scenes, test images → test and held-out scenes",
    }  # fmt: skip
    with atomic_directory(args.output_dir, replaces=["*"]) as staging:
        for name, (columns, slots) in splits.items():
            write_parquet(columns, staging / f"{name}.parquet")
            if name != "heldout":
                write_parquet(slots, staging / f"slots_{name}.parquet")
        (staging / "scenes.json").write_text(json.dumps(info, indent=2))
    print(f"wrote {info['num_scenes']} scenes to {args.output_dir}", flush=True)
    return info


if __name__ == "__main__":
    main()
