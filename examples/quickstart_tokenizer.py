"""Train a tiny VQ-VAE on the Fashion-MNIST subset shipped with vq_hub, then tokenize and reconstruct held-out images.

This is the README's main job until trained default checkpoints ship: about a minute on two CPU cores.

    python examples/quickstart_tokenizer.py --output_dir outputs/quickstart
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vq_hub import VQVAEModel
from vq_hub.data import image_grid, image_to_tensor, load_parquet_images, shipped_fashion_mnist
from vq_hub.metrics import code_counts, codebook_usage, perplexity, psnr


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default="outputs/quickstart")
    parser.add_argument("--max_train_steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--codebook_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    dataset = load_parquet_images(shipped_fashion_mnist())
    images = torch.stack([image_to_tensor(example["image"], resolution=32, channels=1) for example in dataset])
    is_held_out = torch.arange(len(images)) % 10 == 0  # 100 test images, 10 per class
    train_images, test_images = images[~is_held_out], images[is_held_out]

    model = VQVAEModel(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        latent_channels=16,
        vq_embed_dim=16,
        norm_num_groups=16,
        num_vq_embeddings=args.codebook_size,
        kmeans_init=True,
        dead_code_threshold=0.5,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.max_train_steps)

    start = time.perf_counter()
    model.train()
    for step in range(1, args.max_train_steps + 1):
        batch = train_images[torch.randint(0, len(train_images), (args.batch_size,))]
        output = model(batch)
        reconstruction_loss = F.mse_loss(output.sample, batch)
        loss = reconstruction_loss + output.quantizer_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == 1:
            print(
                f"step {step:4d}  reconstruction {reconstruction_loss.item():.4f}  "
                f"commitment {output.commitment_loss.item():.4f}  perplexity {output.perplexity.item():5.1f}  "
                f"usage {output.codebook_usage.item():.0%}"
            )
    print(f"trained {args.max_train_steps} steps in {time.perf_counter() - start:.0f}s")

    model.eval()
    with torch.no_grad():
        codes = model.tokenize(test_images)
        reconstructions = model.detokenize(codes)
    counts = code_counts(codes, model.codebook_size)
    output_dir = Path(args.output_dir)
    model.save_pretrained(output_dir / "tokenizer")
    grid_path = output_dir / "reconstructions.png"
    image_grid([test_images[:16], reconstructions[:16]]).save(grid_path)
    print(
        f"held-out: {len(test_images)} images → codes {tuple(codes.shape[1:])}, "
        f"PSNR {psnr(reconstructions, test_images):.2f} dB, codebook usage {codebook_usage(counts):.0%}, "
        f"perplexity {perplexity(counts):.1f}"
    )
    print(f"tokenizer saved to {output_dir / 'tokenizer'}; originals above reconstructions in {grid_path}")


if __name__ == "__main__":
    main()
