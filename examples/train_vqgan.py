"""Train a VQ-VAE or VQ-GAN tokenizer with Accelerate.

    accelerate launch examples/train_vqgan.py \
        --train_parquet ../shared/data/cifar10/train.parquet --validation_parquet ../shared/data/cifar10/test.parquet \
        --resolution 32 --num_vq_embeddings 1024 --max_train_steps 2000 --output_dir vqgan-cifar10

The result loads with `VQVAEModel.from_pretrained(output_dir)`; the discriminator is saved in `output_dir/discriminator`.
Pass `--vqvae` for a plain VQ-VAE (no discriminator, no perceptual loss), `--hierarchical` for a two-level VQ-VAE-2
(`HierarchicalVQModel`; `vq_hub.load_tokenizer(output_dir)` loads either). With no data flag at all,
`accelerate launch examples/train_vqgan.py` trains on the Fashion-MNIST subset shipped with vq_hub into vqgan-output/.
The quantizer follows `--quantizer_recipe healthy` (16-d l2-normalised codes, k-means init, dead-code restarts) unless
`--quantizer_recipe plain` or its options say otherwise.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from hierarchical_arguments import add_hierarchical_arguments, build_hierarchical_model
from tqdm.auto import tqdm

from vq_hub import PatchDiscriminator, VQVAEModel, load_tokenizer
from vq_hub.code_levels import (
    codebook_counts, detokenize_levels, forward_statistics, is_hierarchical, level_names, level_prefix, level_views,
    quantizers, tokenize_levels, usage_and_perplexity,
)  # fmt: skip
from vq_hub.models.vq_model import QUANTIZER_RECIPES, QUANTIZER_TYPES
from vq_hub.data import (
    SHIPPED_DATA_NOTE, image_grid, image_transform, load_image_dataset, shipped_fashion_mnist_splits,
)  # fmt: skip
from vq_hub.hub import push_to_hub, write_tokenizer_card
from vq_hub.losses import GAN_LOSSES, RECONSTRUCTION_LOSSES, VQGANLoss, load_lpips
from vq_hub.metrics import per_image_mse, psnr, psnr_from_mse
from vq_hub.models.tokenizer_utils import tokenizer_classes
from vq_hub.utils.io import write_text_atomically
from vq_hub.training_guards import NonFiniteGuard, destroys_process_group_after, finish_trackers
from vq_hub.training_utils import (
    EpochSeededSampler, add_optimization_arguments, add_output_arguments, apply_update, ema_weights, evaluating,
    finished_summary, make_ema, make_lr_scheduler, make_optimizer, public_arguments, resume_or_seed, save_checkpoint,
    start_training, training_batches, training_command, training_schedule,
)  # fmt: skip
from vq_hub.visualization import write_codebook_figure

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", help="A dataset on the Hub (or a local dataset script/folder).")
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_data_dir", help="An imagefolder with the training images.")
    data.add_argument("--train_parquet", nargs="+", help="Parquet file(s) with an image column.")
    data.add_argument("--validation_parquet", nargs="+", help="Parquet file(s) for validation (test-split PSNR).")
    data.add_argument("--validation_data_dir", help="An imagefolder for validation.")
    data.add_argument("--validation_split", help="Split of --dataset_name used for validation, e.g. 'test'.")
    data.add_argument("--image_column", default="image")
    data.add_argument("--resolution", type=int, nargs="+", default=[32],
                      help="Image size: one number (square) or height and width (e.g. 32 64).")  # fmt: skip
    data.add_argument("--random_flip", action="store_true", help="Flip training images horizontally at random.")
    data.add_argument("--max_train_samples", type=int)
    data.add_argument("--max_validation_samples", type=int)
    data.add_argument("--cache_dir")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group(
        "model (ignored with --model_config_name_or_path / --pretrained_model_name_or_path)"
    )
    model.add_argument("--pretrained_model_name_or_path",
                       help="Start from a saved tokenizer, VQVAEModel or HierarchicalVQModel (folder or Hub id).")
    model.add_argument("--model_config_name_or_path", help="A VQVAEModel or HierarchicalVQModel config.json (file or "
                       "folder): its _class_name picks the model.")
    model.add_argument("--in_channels", type=int, help="Image channels (default: 3, or 1 for the shipped grayscale data).")
    model.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 64],
                       help="Channels per level; the image is downsampled 2^(levels - 1) times (default: 4×).")
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument("--latent_channels", type=int, default=32)
    model.add_argument("--vq_embed_dim", type=int)
    model.add_argument("--norm_num_groups", type=int, default=32)
    model.add_argument("--num_vq_embeddings", type=int, default=1024)
    model.add_argument("--quantizer_type", default="vector", choices=list(QUANTIZER_TYPES),
                       help="lfq (lookup-free, MAGVIT-v2) and bsq (binary spherical) take one bit per channel: "
                       "--num_vq_embeddings 2^bits; simvq is a frozen random codebook behind a learned linear map; "
                       "residual (RQ-VAE) takes --quantizer_depth vector-quantized codes per position.")
    model.add_argument("--commitment_beta", type=float, default=0.25)
    model.add_argument("--quantizer_recipe", default="healthy", choices=sorted(QUANTIZER_RECIPES),
                       help="Defaults of the four options below: 'healthy' (16-d l2-normalised codes, k-means init, "
                       "restarts under 0.5: codebooks stay in use) or 'plain' (the VQ-VAE paper's quantizer).")
    model.add_argument("--codebook_dim", type=int, help="Low-dimensional codes (e.g. 8) with in/out projections.")
    model.add_argument("--use_l2_norm", action=argparse.BooleanOptionalAction, help="Cosine-similarity codes.")
    model.add_argument("--use_ema_codebook", action="store_true", help="EMA codebook updates instead of gradients.")
    model.add_argument("--codebook_ema_decay", type=float, default=0.99)
    model.add_argument("--kmeans_init", action=argparse.BooleanOptionalAction, help="k-means init on the first batch.")
    model.add_argument("--dead_code_threshold", type=float, help="Restart codes whose EMA usage falls below (0: off).")
    model.add_argument("--fsq_levels", type=int, nargs="+")
    model.add_argument("--gumbel_temperature", type=float, default=1.0)
    model.add_argument("--gumbel_kl_weight", type=float, default=5e-4)
    model.add_argument("--lfq_scale", type=float, default=1.0, help="LFQ's quantized value per channel, ±scale.")
    model.add_argument("--entropy_loss_weight", type=float, default=0.1, help="LFQ/BSQ entropy loss weight (0: off).")
    model.add_argument("--entropy_loss_weight_end", type=float,
                       help="Anneal the entropy weight linearly to this over --entropy_loss_anneal_steps.")
    model.add_argument("--entropy_loss_anneal_steps", type=int, default=0,
                       help="Training forward passes (micro-batches) of the entropy-weight anneal.")
    model.add_argument("--codebook_entropy_weight", type=float, default=1.0, help="γ of the codebook-entropy term.")
    model.add_argument("--entropy_temperature", type=float, help="τ of the entropies (default: LFQ 0.01, BSQ 1).")
    model.add_argument("--entropy_group_size", type=int, default=8, help="Bits per group of the codebook entropy.")
    model.add_argument("--quantizer_depth", type=int, help="Codes per position of --quantizer_type residual "
                       "(RQ-VAE; default 2): each depth quantizes the residual of the earlier ones.")
    model.add_argument("--shared_codebook", action="store_true", help="One codebook for all residual depths.")
    add_hierarchical_arguments(parser)

    loss = parser.add_argument_group("loss")
    loss.add_argument("--vqvae", action="store_true", help="Plain VQ-VAE: no discriminator, no perceptual loss.")
    loss.add_argument("--reconstruction_loss", default="l1", choices=RECONSTRUCTION_LOSSES)
    loss.add_argument("--perceptual_weight", type=float, default=1.0)
    loss.add_argument("--lpips_net", default="vgg", choices=["vgg", "alex"])
    loss.add_argument("--discriminator_weight", type=float, default=0.8)
    loss.add_argument("--discriminator_start", type=int, default=1000, help="Optimizer step at which the GAN starts.")
    loss.add_argument("--gan_loss", default="hinge", choices=GAN_LOSSES)
    loss.add_argument("--discriminator_channels", type=int, default=64)
    loss.add_argument("--discriminator_layers", type=int, default=2)

    optim = add_optimization_arguments(parser, learning_rate=2e-4, betas=(0.5, 0.9), train_batch_size=64)
    optim.add_argument("--discriminator_learning_rate", type=float, default=2e-4)

    output = add_output_arguments(parser, output_dir="vqgan-output")
    output.add_argument("--num_validation_images", type=int, default=8, help="Images in each validation grid.")
    output.add_argument("--feature_network", help="A vq_hub ImageClassifier folder (e.g. checkpoints/cifar10-"
                        "classifier): validation also logs rFID, precision/recall of reconstructions.")  # fmt: skip
    output.add_argument("--fid_num_images", type=int, default=1000, help="Validation images scored for rFID.")
    args = parser.parse_args(argv)

    sources = sum(bool(x) for x in (args.dataset_name, args.train_data_dir, args.train_parquet))
    if sources > 1:
        parser.error("give at most one of --dataset_name, --train_data_dir, --train_parquet")
    args.use_shipped_data = sources == 0  # the bare command trains on the subset the package ships
    if args.in_channels is None:
        args.in_channels = 1 if args.use_shipped_data else 3
    if args.vqvae:
        args.discriminator_weight, args.perceptual_weight = 0.0, 0.0
    if len(args.resolution) > 2:
        parser.error("--resolution takes one number (square images) or two (height width)")
    return args


def build_model(args: argparse.Namespace) -> VQVAEModel:
    if args.pretrained_model_name_or_path:
        return load_tokenizer(args.pretrained_model_name_or_path)
    if args.model_config_name_or_path:
        config = VQVAEModel.load_config(args.model_config_name_or_path)
        model_class = tokenizer_classes().get(config.get("_class_name"), VQVAEModel)
        return model_class.from_config(config)
    quantizer = dict(
        quantizer_type=args.quantizer_type, num_vq_embeddings=args.num_vq_embeddings, commitment_beta=args.commitment_beta,
        quantizer_recipe=args.quantizer_recipe, codebook_dim=args.codebook_dim, use_l2_norm=args.use_l2_norm,
        use_ema=args.use_ema_codebook, ema_decay=args.codebook_ema_decay, kmeans_init=args.kmeans_init,
        dead_code_threshold=args.dead_code_threshold, fsq_levels=args.fsq_levels,
        gumbel_temperature=args.gumbel_temperature, gumbel_kl_weight=args.gumbel_kl_weight, lfq_scale=args.lfq_scale,
        entropy_loss_weight=args.entropy_loss_weight, entropy_loss_weight_end=args.entropy_loss_weight_end,
        entropy_loss_anneal_steps=args.entropy_loss_anneal_steps, codebook_entropy_weight=args.codebook_entropy_weight,
        entropy_temperature=args.entropy_temperature, entropy_group_size=args.entropy_group_size,
        quantizer_depth=args.quantizer_depth, shared_codebook=args.shared_codebook,
    )  # fmt: skip
    if args.hierarchical:
        return build_hierarchical_model(args, quantizer)
    depth = len(args.block_out_channels)
    return VQVAEModel(
        in_channels=args.in_channels,
        out_channels=args.in_channels,
        down_block_types=("DownEncoderBlock2D",) * depth,
        up_block_types=("UpDecoderBlock2D",) * depth,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        latent_channels=args.latent_channels,
        vq_embed_dim=args.vq_embed_dim,
        norm_num_groups=args.norm_num_groups,
        sample_size=args.resolution[0] if len(args.resolution) == 1 else list(args.resolution),
        **quantizer,
    )


def build_datasets(args: argparse.Namespace, channels: int):
    if args.use_shipped_data:
        splits = shipped_fashion_mnist_splits()
        train, validation = splits["train"], splits["validation"]
    else:
        train, validation = load_splits(args)
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if validation is not None and args.max_validation_samples:
        validation = validation.select(range(min(args.max_validation_samples, len(validation))))
    transform = image_transform(args.resolution, channels, args.image_column)
    for dataset in (train, validation):
        if dataset is not None:
            dataset.set_transform(transform)
    return train, validation


def load_splits(args: argparse.Namespace):
    train = load_image_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir, args.train_parquet,
                               cache_dir=args.cache_dir)  # fmt: skip
    validation = None
    if args.validation_parquet or args.validation_data_dir or args.validation_split:
        validation = load_image_dataset(
            args.dataset_name if args.validation_split else None, args.dataset_config_name,
            args.validation_data_dir, args.validation_parquet, split=args.validation_split or "train",
            cache_dir=args.cache_dir,
        )  # fmt: skip
    return train, validation


def collate(examples: list[dict]) -> torch.Tensor:
    return torch.stack([example["pixel_values"] for example in examples])


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """Flip each image horizontally with probability ½ (global torch RNG: restored on resume)."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def evaluate(model, dataloader, accelerator: Accelerator) -> dict[str, float]:
    """Test-split PSNR, codebook usage and perplexity (per level: `top_…`, `bottom_…` for VQ-VAE-2, with the PSNR of
    top-only decodes); every process takes its shard, figures are global."""
    squared_errors, top_only_errors = [], []
    with evaluating(accelerator.unwrap_model(model)) as tokenizer:
        counts = [0] * len(level_names(tokenizer))
        for images in dataloader:
            levels = tokenize_levels(tokenizer, images)
            mse = per_image_mse(detokenize_levels(tokenizer, levels).clamp(-1, 1), images)
            # gather_for_metrics drops the samples repeated to even out the last batch across processes.
            squared_errors.append(accelerator.gather_for_metrics(mse))
            if is_hierarchical(tokenizer):
                top_only = per_image_mse(tokenizer.detokenize_top(levels[0]).clamp(-1, 1), images)
                top_only_errors.append(accelerator.gather_for_metrics(top_only))
            for index, (codes, quantizer) in enumerate(zip(levels, quantizers(tokenizer).values())):
                counts[index] = counts[index] + codebook_counts(quantizer, accelerator.gather_for_metrics(codes))
        names = level_names(tokenizer)
    mse = torch.cat(squared_errors)
    figures = {"psnr": float(psnr_from_mse(mse))}
    if top_only_errors:
        figures["top_only_psnr"] = float(psnr_from_mse(torch.cat(top_only_errors)))
    for name, level_counts in zip(names, counts):  # a residual level: the mean over its codebooks
        usage, level_perplexity = usage_and_perplexity(level_counts)
        figures[level_prefix(name) + "codebook_usage"] = usage
        figures[level_prefix(name) + "perplexity"] = level_perplexity
    return {**figures, "num_images": int(mse.numel())}


def feature_network_of(args: argparse.Namespace, accelerator: Accelerator):
    """The `--feature_network` for rFID at validation, or None (said once in the log)."""
    if not args.feature_network:
        logger.info("rFID is not logged: pass --feature_network checkpoints/cifar10-classifier (a vq_hub "
                    "ImageClassifier folder matching the images) to log it at validation")  # fmt: skip
        return None
    from vq_hub.evaluation import load_feature_network

    return load_feature_network(args.feature_network, accelerator.device)


def reconstruction_quality(model, images: torch.Tensor, feature_network, accelerator: Accelerator) -> dict:
    """rFID, KID, precision and recall of the reconstructions of `images` (main process)."""
    from vq_hub.evaluation import evaluate_tokenizer

    with evaluating(accelerator.unwrap_model(model)) as tokenizer:
        report = evaluate_tokenizer(tokenizer, images, feature_network, progress=False)
    return {key: report[key] for key in ("rfid", "kid", "precision", "recall")}


def save_validation_grid(model, images: torch.Tensor, path: Path, accelerator: Accelerator) -> None:
    """Originals above reconstructions (and, for VQ-VAE-2, above the decodes of the top codes alone)."""
    with evaluating(accelerator.unwrap_model(model)) as tokenizer:
        levels = tokenize_levels(tokenizer, images)
        rows = [images, detokenize_levels(tokenizer, levels)]
        if is_hierarchical(tokenizer):
            rows.append(tokenizer.detokenize_top(levels[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid([row.cpu() for row in rows]).save(path)


@destroys_process_group_after  # not accelerator.end_training(): see its docstring (a gloo deadlock)
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.use_shipped_data:
        print(SHIPPED_DATA_NOTE, flush=True)
    output_dir = Path(args.output_dir)
    accelerator = start_training(args)

    # Models, loss and data.
    model = build_model(args)
    discriminator = None
    if args.discriminator_weight > 0:
        discriminator = PatchDiscriminator(
            in_channels=model.config.in_channels,
            base_channels=args.discriminator_channels,
            num_layers=args.discriminator_layers,
        )
    perceptual = None
    if args.perceptual_weight > 0:
        perceptual, reason = load_lpips(args.lpips_net)
        if perceptual is None:
            fallback = "feature matching on the discriminator" if discriminator else "no perceptual loss"
            logger.warning(f"LPIPS is not used: {reason}. Falling back to {fallback}.", main_process_only=True)
        else:
            perceptual.to(accelerator.device)
    train_dataset, validation_dataset = build_datasets(args, model.config.in_channels)
    if any(size % model.image_size_multiple for size in args.resolution):
        raise SystemExit(f"--resolution {' '.join(map(str, args.resolution))} must be divisible by the downsampling "
                         f"factor {model.downsample_factor} of the model")  # fmt: skip

    sampler = EpochSeededSampler(len(train_dataset), args.seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.train_batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
        num_workers=args.dataloader_num_workers, generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    validation_dataloader = None
    if validation_dataset is not None:
        validation_dataloader = torch.utils.data.DataLoader(
            validation_dataset, batch_size=args.eval_batch_size, collate_fn=collate,
            num_workers=args.dataloader_num_workers,
        )  # fmt: skip

    # The step count is known only once the dataloader is sharded: prepare it before building the LR schedulers.
    train_dataloader = accelerator.prepare(train_dataloader)
    steps_per_epoch, max_train_steps, num_epochs = training_schedule(args, train_dataloader)
    optimizer = make_optimizer(args, model, args.learning_rate, accelerator.device)
    lr_scheduler = make_lr_scheduler(args, optimizer, accelerator, max_train_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if discriminator is not None:
        d_optimizer = make_optimizer(args, discriminator, args.discriminator_learning_rate, accelerator.device)
        d_scheduler = make_lr_scheduler(args, d_optimizer, accelerator, max_train_steps)
        discriminator, d_optimizer, d_scheduler = accelerator.prepare(discriminator, d_optimizer, d_scheduler)
    if validation_dataloader is not None:
        validation_dataloader = accelerator.prepare(validation_dataloader)
    ema_model = make_ema(args, model, accelerator)

    loss_fn = VQGANLoss(
        discriminator=accelerator.unwrap_model(discriminator) if discriminator is not None else None,
        perceptual=perceptual,
        reconstruction=args.reconstruction_loss,
        perceptual_weight=args.perceptual_weight,
        discriminator_weight=args.discriminator_weight,
        discriminator_start=args.discriminator_start,
        gan_loss=args.gan_loss,
    )
    last_layer = accelerator.unwrap_model(model).decoder.conv_out.weight

    global_step = resume_or_seed(accelerator, output_dir, args.resume_from_checkpoint, args.seed)
    guard = NonFiniteGuard(accelerator, output_dir, (args.log_steps, args.checkpointing_steps, args.validation_steps),
                           max_train_steps)  # fmt: skip
    if (done := finished_summary(output_dir, global_step, max_train_steps)) is not None:
        finish_trackers(accelerator)
        return done
    first_epoch = global_step // steps_per_epoch
    skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

    accelerator.init_trackers("train_vqgan", config={k: str(v) for k, v in public_arguments(args).items()})
    logger.info(
        f"{len(train_dataset)} training images, {accelerator.num_processes} process(es) × {args.train_batch_size} × "
        f"{args.gradient_accumulation_steps} accumulation; {max_train_steps} steps; "
        f"perceptual: {'LPIPS' if perceptual else 'feature matching' if loss_fn.uses_feature_matching else 'none'}"
    )
    feature_network, fid_images = feature_network_of(args, accelerator), None
    if feature_network is not None and validation_dataset is not None and accelerator.is_main_process:
        count = min(args.fid_num_images, len(validation_dataset))
        fid_images = collate([validation_dataset[i] for i in range(count)])
    validation_images = None
    if validation_dataset is not None:
        count = min(args.num_validation_images, len(validation_dataset))
        validation_images = collate([validation_dataset[i] for i in range(count)])
        validation_images = validation_images.to(accelerator.device)

    def update(loss, terms, module, module_optimizer, module_scheduler) -> None:
        apply_update(accelerator, loss, terms, module, module_optimizer, module_scheduler, args.max_grad_norm,
                     global_step, guard)  # fmt: skip

    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)  # fmt: skip
    start_time, history = time.perf_counter(), []
    model.train()
    for images in training_batches(accelerator, train_dataloader, first_epoch, num_epochs, skip_batches):
        if global_step >= max_train_steps:  # checked first: a run resumed at its last step trains nothing more
            break
        if args.random_flip:
            images = random_flip(images)
        with accelerator.accumulate(*(m for m in (model, discriminator) if m is not None)):
            output = model(images)
            loss, terms = loss_fn.generator_loss(images, output.sample, output.quantizer_loss, last_layer,
                                                 global_step)  # fmt: skip
            update(loss, terms, model, optimizer, lr_scheduler)
            if loss_fn.gan_active(global_step):
                d_loss, d_terms = loss_fn.discriminator_loss(discriminator, images, output.sample)
                update(d_loss, d_terms, discriminator, d_optimizer, d_scheduler)
                terms.update(d_terms)

        if not accelerator.sync_gradients:
            continue
        if ema_model is not None:
            ema_model.step(accelerator.unwrap_model(model).parameters())
        global_step += 1
        progress.update(1)
        guard.check_if_due(global_step)  # logging, checkpoint and validation steps: the one host sync

        if global_step % args.log_steps == 0 or global_step in (1, max_train_steps):
            statistics = forward_statistics(accelerator.unwrap_model(model), output)  # per level for VQ-VAE-2
            restarts = {name: int(statistics.pop(name)) for name in list(statistics) if name.endswith("restarts")}
            terms.update(statistics, psnr=psnr(output.sample.detach(), images))
            logs = {name: float(accelerator.reduce(value.float(), "mean")) for name, value in terms.items()}
            logs["lr"] = lr_scheduler.get_last_lr()[0]
            logs.update(restarts)
            accelerator.log(logs, step=global_step)
            history.append({"step": global_step, **logs})
            usage = {name: f"{logs[name]:.0%}" for name in logs if name.endswith("codebook_usage")}
            progress.set_postfix(rec=f"{logs['reconstruction_loss']:.4f}", **usage)

        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit)

        if validation_dataloader is not None and global_step % args.validation_steps == 0:
            with ema_weights(ema_model, accelerator.unwrap_model(model)):
                metrics = evaluate(model, validation_dataloader, accelerator)
                if accelerator.is_main_process:
                    save_validation_grid(
                        model, validation_images, output_dir / "validation" / f"step-{global_step:07d}.png", accelerator
                    )
                if fid_images is not None:
                    metrics.update(reconstruction_quality(model, fid_images, feature_network, accelerator))
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=global_step)
            logger.info(f"step {global_step} validation: {metrics}")
    progress.close()

    # Final evaluation and export (EMA weights when EMA is on).
    summary = {"steps": global_step, "num_processes": accelerator.num_processes,
               "train_seconds": round(time.perf_counter() - start_time, 1), "history": history}  # fmt: skip
    unwrapped = accelerator.unwrap_model(model)
    with ema_weights(ema_model, unwrapped):
        if validation_dataloader is not None:
            summary["validation"] = evaluate(model, validation_dataloader, accelerator)
            if fid_images is not None:
                summary["validation"].update(reconstruction_quality(model, fid_images, feature_network, accelerator))
            logger.info(f"final validation: {summary['validation']}")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir)
            codebook_images = None if validation_dataset is None else \
                collate([validation_dataset[i] for i in range(min(1000, len(validation_dataset)))])  # fmt: skip
            for level, view in level_views(unwrapped).items():  # VQ-VAE-2: a page per level, codebook-top.png, …
                name = "codebook.png" if view is unwrapped else f"codebook-{level}.png"
                write_codebook_figure(view, output_dir / "validation" / name, codebook_images)
            if discriminator is not None:
                accelerator.unwrap_model(discriminator).save_pretrained(output_dir / "discriminator")
            write_text_atomically(
                output_dir / "training_summary.json", json.dumps({**summary, "args": public_arguments(args)}, indent=2)
            )
            repo_id = args.hub_model_id or output_dir.name
            training = (
                f"`{training_command('train_vqgan.py', argv)}`\n\n{global_step} steps on "
                f"{accelerator.num_processes} process(es) ({accelerator.device.type}), {summary['train_seconds']} s."
            )
            write_tokenizer_card(output_dir, repo_id, training, summary.get("validation"))
            if args.push_to_hub:
                url = push_to_hub(output_dir, repo_id, token=args.hub_token,
                                  ignore_patterns=["checkpoint-*", ".checkpoint-*", "logs/*"])  # fmt: skip
                logger.info(f"pushed to {url}")
    finish_trackers(accelerator)
    return summary


if __name__ == "__main__":
    main()
