"""Images/s of one VQ-GAN training step (generator + discriminator) with vq_hub's VQVAEModel and diffusers' VQModel.

Both models get the same encoder/decoder config and the same loss (vq_hub's VQGANLoss: L1 + feature matching +
adaptively weighted hinge GAN + quantizer terms, PatchDiscriminator, AdamW on both); only the tokenizer differs.
Steps are timed round-robin in one process.

    python benchmarks/bench_train_step.py [--device cuda] [--batch-size 64] [--block-out-channels 32 64 128]
"""

import argparse

import torch
from diffusers import VQModel as DiffusersVQModel
from timing import median_seconds

from vq_hub import PatchDiscriminator, VQVAEModel
from vq_hub.losses import VQGANLoss


def make_step(model: torch.nn.Module, images: torch.Tensor, quantizer_loss_of, device: torch.device):
    """One full VQ-GAN update (generator, then discriminator) for `model`, with a fresh discriminator."""
    discriminator = PatchDiscriminator(in_channels=images.shape[1], base_channels=64, num_layers=2).to(device)
    loss_fn = VQGANLoss(discriminator=discriminator, discriminator_start=0)
    g_optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    d_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-4)
    last_layer = model.decoder.conv_out.weight

    def step() -> None:
        output = model(images)
        loss, _ = loss_fn.generator_loss(images, output.sample, quantizer_loss_of(output), last_layer, step=1)
        g_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        g_optimizer.step()
        d_loss, _ = loss_fn.discriminator_loss(discriminator, images, output.sample)
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--block-out-channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--latent-channels", type=int, default=32)
    parser.add_argument("--num-vq-embeddings", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    depth = len(args.block_out_channels)
    shared_config = dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * depth,
        up_block_types=("UpDecoderBlock2D",) * depth, block_out_channels=tuple(args.block_out_channels),
        layers_per_block=1, latent_channels=args.latent_channels, num_vq_embeddings=args.num_vq_embeddings,
        norm_num_groups=32, sample_size=args.resolution,
    )  # fmt: skip
    images = torch.rand(args.batch_size, 3, args.resolution, args.resolution, device=device) * 2 - 1
    ours = VQVAEModel(**shared_config).to(device).train()
    theirs = DiffusersVQModel(**shared_config).to(device).train()
    runs = {
        "vq_hub VQVAEModel": make_step(ours, images, lambda output: output.quantizer_loss, device),
        "diffusers VQModel": make_step(theirs, images, lambda output: output.commit_loss.mean(), device),
    }
    seconds = median_seconds(runs, args.repeats)

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"resolution={args.resolution} block_out_channels={tuple(args.block_out_channels)}")  # fmt: skip
    print(f"{'tokenizer':<20} {'ms/step':>9} {'images/s':>9} {'ratio':>7}")
    for name, value in seconds.items():
        print(f"{name:<20} {value * 1e3:>9.1f} {args.batch_size / value:>9.1f} "
              f"{seconds['vq_hub VQVAEModel'] / value:>6.2f}x")  # fmt: skip
    print("ratio: vq_hub's time over the row's (below 1 = the row is slower than vq_hub)")


if __name__ == "__main__":
    main()
