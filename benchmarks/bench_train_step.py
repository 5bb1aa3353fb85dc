"""Images/s of one VQ-GAN training step (generator + discriminator) with vq_hub's VQVAEModel and diffusers' VQModel,
and images/s of tokenizing (what `examples/encode_dataset.py` spends its time on).

Both models get the same encoder/decoder config and the same loss (vq_hub's VQGANLoss: L1 + feature matching +
adaptively weighted hinge GAN + quantizer terms, PatchDiscriminator, AdamW on both); only the tokenizer differs.
vq_hub is also timed with the step's speed options: channels-last tensors and the fused AdamW kernel, and with
`--compile`, `torch.compile` on the model. Steps are timed round-robin in one process. The share of a step spent in
convolutions (forward and backward, from the profiler) says how much any change outside them can gain: both models
run diffusers' `Encoder`/`Decoder`, so the convolutions are the same code.

    python benchmarks/bench_train_step.py [--device cuda] [--batch-size 64] [--block-out-channels 32 64 128] [--compile]
"""

import argparse

import torch
from diffusers import VQModel as DiffusersVQModel
from timing import median_seconds

from vq_hub import PatchDiscriminator, VQVAEModel
from vq_hub.losses import VQGANLoss


def make_step(model: torch.nn.Module, images: torch.Tensor, quantizer_loss_of, device: torch.device, fused=False,
              dtype: torch.dtype | None = None):  # fmt: skip
    """One full VQ-GAN update (generator, then discriminator) for `model`, with a fresh discriminator; under autocast
    to `dtype` when given (as `accelerate launch --mixed_precision bf16` runs it)."""
    discriminator = PatchDiscriminator(in_channels=images.shape[1], base_channels=64, num_layers=2).to(device)
    if images.is_contiguous(memory_format=torch.channels_last):
        discriminator = discriminator.to(memory_format=torch.channels_last)
    loss_fn = VQGANLoss(discriminator=discriminator, discriminator_start=0)
    options = {"fused": True} if fused else {}
    g_optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, **options)
    d_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-4, **options)
    last_layer = getattr(model, "_orig_mod", model).decoder.conv_out.weight

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step() -> None:
        with autocast():
            output = model(images)
            loss, _ = loss_fn.generator_loss(images, output.sample, quantizer_loss_of(output), last_layer, step=1)
        g_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        g_optimizer.step()
        with autocast():
            d_loss, _ = loss_fn.discriminator_loss(discriminator, images, output.sample)
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (and compilation, when compiled)
    return step


def convolution_share(step) -> float:
    """Fraction of one step's self CPU time (device time on CUDA) spent in convolution kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as profiler:
        step()
    events = profiler.key_averages()
    attribute = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    total = sum(getattr(event, attribute) for event in events)
    convolutions = sum(getattr(event, attribute) for event in events if "conv" in event.key.lower())
    return convolutions / total


def tokenize_runs(ours: VQVAEModel, theirs: DiffusersVQModel, images: torch.Tensor, bf16: bool = False) -> dict:
    """Codes of a batch: vq_hub's `tokenize` and diffusers' encode → quantize, without gradient (and, with `bf16`,
    both under bf16 autocast too)."""

    def runs(dtype):
        def autocast():
            return torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None)

        @torch.no_grad()
        def ours_tokenize() -> None:
            with autocast():
                ours.tokenize(images)

        @torch.no_grad()
        def theirs_tokenize() -> None:
            with autocast():
                latents = theirs.encode(images).latents
                theirs.quantize(latents)

        suffix = ", bf16 autocast" if dtype is not None else ""
        return {f"vq_hub VQVAEModel.tokenize{suffix}": ours_tokenize,
                f"diffusers VQModel encode + quantize{suffix}": theirs_tokenize}  # fmt: skip

    return {**runs(None), **(runs(torch.bfloat16) if bf16 else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encode-batch-size", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--block-out-channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--latent-channels", type=int, default=32)
    parser.add_argument("--num-vq-embeddings", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="Also time vq_hub under torch.compile.")
    parser.add_argument("--bf16", action="store_true", default=None,
                        help="Also time both models under bf16 autocast (default: on CUDA).")
    parser.add_argument("--no-tf32", action="store_true", help="On CUDA, keep float32 matmuls exact (both models).")
    args = parser.parse_args()

    device = torch.device(args.device)
    bf16 = args.bf16 if args.bf16 is not None else device.type == "cuda"
    if device.type == "cuda":  # the training scripts' defaults (`vq_hub.training_utils.configure_cuda`), for both
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not args.no_tf32
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    depth = len(args.block_out_channels)
    shared_config = dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * depth,
        up_block_types=("UpDecoderBlock2D",) * depth, block_out_channels=tuple(args.block_out_channels),
        layers_per_block=1, latent_channels=args.latent_channels, num_vq_embeddings=args.num_vq_embeddings,
        norm_num_groups=32, sample_size=args.resolution,
    )  # fmt: skip
    images = torch.rand(args.batch_size, 3, args.resolution, args.resolution, device=device) * 2 - 1
    channels_last = images.contiguous(memory_format=torch.channels_last)

    def ours() -> VQVAEModel:
        torch.manual_seed(0)
        return VQVAEModel(**shared_config).to(device).train()

    theirs = DiffusersVQModel(**shared_config).to(device).train()
    def quantizer_loss(output):
        return output.quantizer_loss

    runs = {
        "vq_hub VQVAEModel": make_step(ours(), images, quantizer_loss, device),
        "vq_hub, channels-last + fused AdamW": make_step(
            ours().to(memory_format=torch.channels_last), channels_last, quantizer_loss, device, fused=True
        ),
        "diffusers VQModel": make_step(theirs, images, lambda output: output.commit_loss.mean(), device),
    }
    if bf16:  # the recommended GPU configuration: bf16 autocast (quantizer in float32 inside it), fused AdamW
        runs["vq_hub, bf16 autocast + fused AdamW (recommended on GPU)"] = make_step(
            ours(), images, quantizer_loss, device, fused=device.type == "cuda", dtype=torch.bfloat16)
        runs["vq_hub, bf16 autocast + channels-last + fused AdamW"] = make_step(
            ours().to(memory_format=torch.channels_last), channels_last, quantizer_loss, device,
            fused=device.type == "cuda", dtype=torch.bfloat16)
        runs["diffusers VQModel, bf16 autocast"] = make_step(
            theirs, images, lambda output: output.commit_loss.mean(), device, dtype=torch.bfloat16)  # fmt: skip
    if args.compile:
        runs["vq_hub, torch.compile"] = make_step(torch.compile(ours()), images, quantizer_loss, device)
    seconds = median_seconds(runs, args.repeats)
    share = convolution_share(runs["vq_hub VQVAEModel"])

    encode_images = torch.rand(args.encode_batch_size, 3, args.resolution, args.resolution, device=device) * 2 - 1
    encoding = tokenize_runs(ours().eval(), theirs.eval(), encode_images, bf16)
    for run in encoding.values():
        run()
    encode_seconds = median_seconds(encoding, args.repeats)

    gpu = f" ({torch.cuda.get_device_name(device)}, TF32 {'off' if args.no_tf32 else 'on'})" \
        if device.type == "cuda" else ""  # fmt: skip
    print(f"device={device}{gpu} torch={torch.__version__} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"resolution={args.resolution} block_out_channels={tuple(args.block_out_channels)}")  # fmt: skip
    print()
    print("| training step | ms/step | images/s | diffusers' time over the row's (same precision) |")
    print("|---|---:|---:|---:|")
    for name, value in seconds.items():
        reference = seconds["diffusers VQModel, bf16 autocast" if "bf16" in name else "diffusers VQModel"]
        print(f"| {name} | {value * 1e3:.1f} | {args.batch_size / value:.1f} | {reference / value:.2f}x |")
    print(f"\nconvolutions (forward + backward): {share:.0%} of vq_hub's step")
    print()
    print(f"| tokenizing (batch {args.encode_batch_size}, no gradient) | images/s | ratio to diffusers |")
    print("|---|---:|---:|")
    for name, value in encode_seconds.items():
        reference = encode_seconds["diffusers VQModel encode + quantize" + (", bf16 autocast" if "bf16" in name else "")]
        print(f"| {name} | {args.encode_batch_size / value:,.0f} | {reference / value:.2f}x |")


if __name__ == "__main__":
    main()
