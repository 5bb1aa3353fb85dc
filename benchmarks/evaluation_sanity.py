"""The sanity figures of the evaluation harness (README): a split against the other split of the same dataset gives a
small FID, noise and another dataset a large one, a tokenizer's reconstructions sit between.

    python benchmarks/evaluation_sanity.py --data ../shared/data --num-images 2000
"""

import argparse
from pathlib import Path

import torch

from vq_hub import VQVAEModel
from vq_hub.cli._common import read_images
from vq_hub.data import image_to_tensor
from vq_hub.evaluation import load_feature_network, score_images

ROOT = Path(__file__).resolve().parents[1]


def images_of(path: Path, channels: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_images(str(path), count, seed)  # drawn with the classes in turn
    return torch.stack([image_to_tensor(image, 32, channels) for image in images]), torch.tensor(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data", help="Folder with fashion_mnist/ and cifar10/ Parquet files.")
    parser.add_argument("--num-images", type=int, default=2000, help="Images in each compared set.")
    args = parser.parse_args(argv)
    data, n = Path(args.data), args.num_images
    print("| feature network | images compared with the test split | N | FID | KID×1e3 | precision | recall |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for dataset, other, channels in [("fashion_mnist", "cifar10", 1), ("cifar10", "fashion_mnist", 3)]:
        network = load_feature_network(ROOT / "checkpoints" / f"{dataset.replace('_', '-')}-classifier")
        train, labels = images_of(data / dataset / "train.parquet", channels, n, seed=0)
        sets = {f"{dataset} train split": (train, labels),
                f"{other} test split (another dataset)": (images_of(data / other / "test.parquet", channels, n, 0)[0], None),
                "uniform noise": (torch.rand(n, channels, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, None)}  # fmt: skip
        if dataset == "fashion_mnist":
            tokenizer = VQVAEModel.from_pretrained(ROOT / "checkpoints" / "fashion-mnist-vqvae").eval()
            with torch.no_grad():
                rebuilt = torch.cat([tokenizer.detokenize(tokenizer.tokenize(train[i : i + 250])).clamp(-1, 1)
                                     for i in range(0, n, 250)])  # fmt: skip
            sets["fashion-mnist-vqvae reconstructions of those train images"] = (rebuilt, labels)
        for name, (images, image_labels) in sets.items():
            s = score_images(images, network, labels=image_labels)
            print(f"| {network.name} | {name} | {n:,} | {s['fid']:.2f} | {s['kid'] * 1000:.2f} | {s['precision']:.3f} "
                  f"| {s['recall']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
