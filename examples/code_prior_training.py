"""The training loop `train_prior.py` and `train_diffusion.py` share: a transformer over the codes of an encoded
dataset (examples/encode_dataset.py), with Accelerate. Each script brings its model, its loss and its pipeline.
Grids are conditioned on a class token and/or a prefix from a second vocabulary (captions: caption_conditioning.py;
any `prefix_ids` column of the encoded dataset)."""

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from caption_conditioning import add_caption_arguments, prepare_captions
from hierarchical_priors import add_level_arguments, check_level, level_pipeline
from text_encoder_conditioning import build_cross_attention_prior
from tqdm.auto import tqdm
from transformers import AutoConfig

from vq_hub import CodeVocabulary, VQVAEModel, VQPipeline, load_tokenizer
from vq_hub.code_levels import codebook_sizes, level_names
from vq_hub.data import PREFIX_COLUMNS, code_split_files, collate_code_batch, load_code_dataset
from vq_hub.scaling import (
    check_strategy, data_position, enable_gradient_checkpointing, gathered_model, process_layout,
)  # fmt: skip
from vq_hub.streaming import add_streaming_arguments, streaming_batches
from vq_hub.utils.io import write_text_atomically
from vq_hub.utils.random import seeded_global_rng
from vq_hub.training_guards import NonFiniteGuard, destroys_process_group_after, finish_trackers
from vq_hub.training_utils import (
    EpochSeededSampler, add_optimization_arguments, add_output_arguments, apply_update, ema_weights, evaluating,
    finished_summary, make_ema, make_lr_scheduler, make_optimizer, public_arguments, resume_or_seed, save_checkpoint,
    start_training, training_batches, training_command, training_schedule,
)  # fmt: skip

logger = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    """The flags both scripts take: data, transformer size, conditioning, optimisation, output and sample grids."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--codes_dir",
        default="codes-output",
        help="Output folder of examples/encode_dataset.py (its default output folder by default).",
    )
    data.add_argument("--max_train_samples", type=int)
    add_streaming_arguments(data, images=False)
    data.add_argument("--vqvae_name_or_path", help="The tokenizer that made the codes (default: the one recorded).")

    model = parser.add_argument_group("transformer (sizes ignored with --config_name_or_path)")
    model.add_argument("--config_name_or_path", help="A transformers config (file, folder or Hub id).")
    model.add_argument("--hidden_size", type=int, default=256)
    model.add_argument("--num_layers", type=int, default=8)
    model.add_argument("--num_heads", type=int, default=8)
    model.add_argument("--unconditional", action="store_true", help="Ignore the labels.")
    model.add_argument("--gradient_checkpointing", action="store_true", help="Recompute each block's activations in "
                       "the backward pass (transformers' gradient checkpointing): less memory, ~30%% more compute.")
    model.add_argument(
        "--class_dropout",
        type=float,
        default=0.1,
        help="Probability of training a row without its class (for classifier-free guidance).",
    )
    model.add_argument("--prompt_dropout", type=float, help="Probability of training a row with the empty prefix — "
                       "the empty prompt of a text-to-image prior (for classifier-free guidance); default 0.1, or 0 "
                       "for a VQ-VAE-2 bottom prior, whose prefix (the top codes) is always known.")  # fmt: skip
    add_caption_arguments(parser)
    add_level_arguments(parser)

    add_optimization_arguments(parser, learning_rate=5e-4, betas=(0.9, 0.95), train_batch_size=64, weight_decay=0.01)
    output = add_output_arguments(parser, output_dir=output_dir)
    output.add_argument("--images_per_class", type=int, default=8, help="Columns of the sample grids.")
    output.add_argument("--guidance_scale", type=float, default=1.0, help="For the sample grids.")
    output.add_argument("--temperature", type=float, default=1.0, help="For the sample grids.")
    output.add_argument("--feature_network", help="A vq_hub ImageClassifier folder (e.g. checkpoints/fashion-mnist-"
                        "classifier): validation also logs FID, precision/recall and class accuracy of samples.")  # fmt: skip
    output.add_argument("--fid_num_images", type=int, default=500, help="Samples scored at each validation.")


def build_transformer(args: argparse.Namespace, vqvae: VQVAEModel, info: dict, auto_class, config_helper,
                      with_mask_token: bool = False):  # fmt: skip
    """`auto_class.from_config` of `--config_name_or_path` (checked against the codes) or of `config_helper` (one of
    vq_hub's `autoregressive_prior_config` / `denoiser_config`) with the size flags (and `info`'s prefix vocabulary:
    the captions' tokenizer, or a `prefix_ids` column recorded in encoding.json). With a text encoder, the prior
    cross-attends to it (text_encoder_conditioning.py)."""
    if "caption_states" in info:
        return build_cross_attention_prior(args, vqvae, info, auto_class, config_helper)
    num_classes = 0 if args.unconditional else info["num_classes"]
    prefix = (info.get("prefix_vocab_size", 0), info.get("prefix_length", 0))
    names = info.get("class_names") or []  # recorded as transformers' id2label: `--class Sneaker`, the demo
    labels = {"id2label": dict(enumerate(names))} if num_classes and len(names) == num_classes else {}
    if not args.config_name_or_path:
        config = config_helper(
            vqvae, num_classes, model_type=args.model_type, resolution=info["resolution"],
            hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
            prefix_vocab_size=prefix[0], prefix_length=prefix[1], level=info.get("level"), **labels,
        )  # fmt: skip
        return auto_class.from_config(config)
    config = AutoConfig.from_pretrained(args.config_name_or_path)
    try:
        vocabulary = CodeVocabulary.from_config(config)
    except ValueError as error:
        raise SystemExit(f"--config_name_or_path: {error}") from None
    expected = (info["codebook_size"], num_classes, with_mask_token, info["code_grid_size"],
                info.get("code_depth", 1), *prefix)  # fmt: skip
    found = (vocabulary.codebook_size, vocabulary.num_classes, vocabulary.with_mask_token, list(config.code_grid_size),
             getattr(config, "code_depth", 1), vocabulary.prefix_vocab_size, vocabulary.prefix_length)  # fmt: skip
    if found != expected:
        raise SystemExit(
            f"--config_name_or_path: (codebook_size, num_classes, mask token, code_grid_size, code_depth, "
            f"prefix_vocab_size, prefix_length) are {found}, these codes need {expected} (build the config with "
            f"vq_hub.{config_helper.__name__})"
        )
    return auto_class.from_config(config)


def condition_tokens(vocabulary: CodeVocabulary, labels: torch.Tensor, class_dropout: float) -> torch.LongTensor:
    """Class tokens, each replaced by the null class with probability `class_dropout` (global RNG: resumable)."""
    if vocabulary.num_classes == 0:
        return vocabulary.condition_tokens(None, labels.shape[0], labels.device)
    dropped = torch.rand(labels.shape, device=labels.device) < class_dropout
    # Not validated per batch (a host sync each step): `check_conditions` checked the whole dataset once.
    return vocabulary.condition_tokens(torch.where(dropped, -1, labels), labels.shape[0], labels.device, validate=False)


def condition_prefix(vocabulary: CodeVocabulary, batch: dict, prompt_dropout: float):
    """`(prefix ids, prefix mask)` of a batch, each row emptied (mask 0: the empty prompt, the unconditional input)
    with probability `prompt_dropout` (global RNG: resumable); `(None, None)` for a prior without a prefix (then no
    random number is drawn, so class-conditional runs are unchanged)."""
    if vocabulary.prefix_length == 0:
        return None, None
    if "prefix_ids" not in batch:
        raise ValueError("the prior has a prefix vocabulary, but the batch has no `prefix_ids`")
    ids = batch["prefix_ids"]
    mask = batch.get("prefix_mask", torch.ones_like(ids))
    if prompt_dropout > 0:
        kept = torch.rand(ids.shape[0], device=ids.device) >= prompt_dropout
        mask = mask * kept[:, None]
    return ids, mask


def start_tokens(vocabulary: CodeVocabulary, batch: dict, class_dropout: float, prompt_dropout: float):
    """`(tokens, attention mask)` of everything before the first code — `[prefix, condition token]` — with class and
    prefix dropout (0 for evaluation)."""
    conditions = condition_tokens(vocabulary, batch["labels"], class_dropout)
    return vocabulary.start_tokens(conditions, *condition_prefix(vocabulary, batch, prompt_dropout), validate=False)


def check_conditions(vocabulary: CodeVocabulary, dataset, name: str) -> None:
    """Check every row's label and prefix ids against the prior's vocabulary once, when the data is loaded, so the
    training step does not read them back (a host sync) on every batch."""
    columns = [column for column in ("label", *PREFIX_COLUMNS) if column in dataset.column_names]
    for start in range(0, len(dataset), 65536):
        rows = dataset.select_columns(columns)[start : start + 65536]  # columns of a slice: no row-by-row reads
        try:
            if vocabulary.num_classes:
                vocabulary.check_class_labels(torch.as_tensor(rows["label"]).long(), allow_null=True)
            if vocabulary.prefix_length:
                vocabulary.prefix_tokens(torch.as_tensor(rows["prefix_ids"]).long(),
                                         torch.as_tensor(rows["prefix_mask"]) if "prefix_mask" in rows else None)
        except ValueError as error:
            raise SystemExit(f"the {name} split does not fit the prior: {error}") from None


def checked_stream_batch(vocabulary: CodeVocabulary, rows: list[dict]) -> dict[str, torch.LongTensor]:
    """Rows of a code stream → a batch (`collate_code_batch`), its labels and prefix ids checked against the prior's
    vocabulary on the CPU (no host sync), as `check_conditions` checks data held in memory."""
    batch = collate_code_batch([{key: torch.as_tensor(value) for key, value in row.items()
                                 if key in ("codes", "label", *PREFIX_COLUMNS)} for row in rows])  # fmt: skip
    try:
        if vocabulary.num_classes:
            vocabulary.check_class_labels(batch["labels"], allow_null=True)
        if vocabulary.prefix_length:
            vocabulary.prefix_tokens(batch["prefix_ids"], batch.get("prefix_mask"))
    except ValueError as error:
        raise SystemExit(f"the streamed train split does not fit the prior: {error}") from None
    return batch


# loss_fn(model, batch {"codes": (B, n), "labels": (B,), "prefix_ids"/"prefix_mask": (B, L) when there is a prefix},
#         reduction="mean" | "none" (one loss per grid), training=True | False)
LossFunction = Callable[..., torch.Tensor]


def evaluate(model, dataloader, loss_fn: LossFunction, accelerator: Accelerator, seed: int) -> dict[str, float]:
    """Mean validation loss per grid over every process's shard; random draws (timesteps, noise) come from a fixed
    seed, so figures compare across steps, and the training RNG stream is left as it was."""
    losses = []
    with seeded_global_rng(seed + accelerator.process_index, accelerator.device), \
            evaluating(accelerator.unwrap_model(model)) as unwrapped:  # fmt: skip
        for batch in dataloader:
            per_grid = loss_fn(unwrapped, batch, reduction="none", training=False)
            losses.append(accelerator.gather_for_metrics(per_grid))
    losses = torch.cat(losses)
    return {"loss": float(losses.mean()), "num_examples": int(losses.numel())}


def feature_network_of(args: argparse.Namespace, accelerator: Accelerator):
    """The `--feature_network` for sample FID at validation, or None (said once in the log)."""
    if not args.feature_network:
        logger.info("sample FID is not logged: pass --feature_network checkpoints/fashion-mnist-classifier (a vq_hub "
                    "ImageClassifier folder) to log FID, precision/recall and class accuracy at validation")  # fmt: skip
        return None
    from vq_hub.evaluation import load_feature_network

    return load_feature_network(args.feature_network, accelerator.device)


def sample_quality(pipe: VQPipeline, feature_network, args: argparse.Namespace, sample_kwargs: dict,
                   validation_dataset=None) -> dict:  # fmt: skip
    """FID, KID, precision, recall and class accuracy of `--fid_num_images` samples (the grids' settings, `--seed`);
    for a text-to-image pipeline, FID of one sample per validation caption against the tokenizer's decoding of those
    captions' codes (what the prior can at best reach), with the slot feature network."""
    from vq_hub.evaluation import evaluate_pipeline

    if getattr(pipe, "tokenizer", None) is not None:
        return text_sample_quality(pipe, feature_network, args, sample_kwargs, validation_dataset)

    report = evaluate_pipeline(
        pipe, feature_network, num_images=args.fid_num_images, batch_size=min(100, args.fid_num_images),
        seed=args.seed, progress=False, guidance_scale=args.guidance_scale, temperature=args.temperature,
        **sample_kwargs,
    )  # fmt: skip
    keys = ("fid", "kid", "precision", "recall", "class_accuracy", "seconds_per_image")
    return {key: report[key] for key in keys if key in report}


def text_sample_quality(pipe: VQPipeline, feature_network, args, sample_kwargs: dict, validation_dataset) -> dict:
    from vq_hub.evaluation.text_to_image import evaluate_text_to_image

    if validation_dataset is None:
        return {"fid_note": "not computed: no validation split (its captions are the prompts)"}
    rows = validation_dataset.with_format(None).select(range(min(args.fid_num_images, len(validation_dataset))))
    codes = pipe.sequence_to_codes(torch.tensor(rows["codes"], dtype=torch.long))
    with torch.no_grad():
        reference = torch.cat([pipe.vqvae.detokenize(codes[i : i + 100].to(pipe.device)).float().clamp(-1, 1).cpu()
                               for i in range(0, len(codes), 100)])  # fmt: skip
    options = {key: value for key, value in sample_kwargs.items() if key != "prompts"}
    try:
        report = evaluate_text_to_image(
            pipe, rows[args.caption_column], feature_network.classifier, reference, batch_size=min(100, len(codes)),
            seed=args.seed, network_name=feature_network.name, guidance_scale=args.guidance_scale,
            temperature=args.temperature, **options,
        )  # fmt: skip
    except ValueError as error:  # the feature network does not fit these images
        return {"fid_note": f"not computed: {error}"}
    return {key: report[key] for key in ("fid", "seconds_per_image")}


@destroys_process_group_after  # not accelerator.end_training(): see its docstring (a gloo deadlock)
def train(
    args: argparse.Namespace,
    argv: list[str] | None,
    script: str,
    build_model: Callable[[VQVAEModel, dict], torch.nn.Module],
    loss_fn: LossFunction,
    make_pipeline: Callable[..., VQPipeline],
    sample_kwargs: dict,
    metrics: Callable[[dict], dict] = lambda figures: figures,
) -> dict:
    """Train `build_model(vqvae, info)` with `loss_fn(model, batch)` and save `make_pipeline(vqvae, model, tokenizer)`
    (the captions' tokenizer, or None)."""
    output_dir = Path(args.output_dir)
    accelerator = start_training(args)

    if not Path(args.codes_dir).is_dir():
        raise SystemExit(f"--codes_dir {args.codes_dir}: no such folder; encode a dataset first with "
                         "`accelerate launch examples/encode_dataset.py` (with no arguments it encodes the subset "
                         "shipped with vq_hub into codes-output/)")  # fmt: skip
    if args.streaming and args.caption_column:
        raise SystemExit("--caption_column is not supported with --streaming: the caption tokenizer is trained on "
                         "every caption first")  # fmt: skip
    try:  # a two-level encoding: the view of --level (the bottom level's prefix_ids are the top codes)
        train_dataset, info = load_code_dataset(args.codes_dir, "train", level=args.level, streaming=args.streaming)
    except ValueError as error:
        raise SystemExit(f"--codes_dir {args.codes_dir}: {error}") from None
    if args.prompt_dropout is None:
        args.prompt_dropout = 0.0 if info.get("level") else 0.1
    if args.max_train_samples:
        train_dataset = train_dataset.take(args.max_train_samples) if args.streaming else \
            train_dataset.select(range(min(args.max_train_samples, len(train_dataset))))  # fmt: skip
    validation_dataset = None
    if code_split_files(args.codes_dir, "validation")[0]:
        validation_dataset, _ = load_code_dataset(args.codes_dir, "validation", level=args.level)
    tokenizer, train_dataset, validation_dataset, prompts = prepare_captions(args, info, train_dataset,
                                                                             validation_dataset)  # fmt: skip
    if prompts is not None:
        sample_kwargs = {**sample_kwargs, "prompts": prompts}
    vqvae = load_tokenizer(args.vqvae_name_or_path or info["tokenizer"]).eval().requires_grad_(False)
    top_prior = check_level(args, info, vqvae, allow_top=script == "train_prior.py")
    codebook_size = dict(zip(level_names(vqvae), codebook_sizes(vqvae))).get(info.get("level", "codes"))
    if codebook_size is None:
        raise SystemExit(f"the tokenizer has two levels of codes but {args.codes_dir} holds single-level codes: pass "
                         f"the tokenizer that encoded them")  # fmt: skip
    if codebook_size != info["codebook_size"]:
        raise SystemExit(f"the tokenizer has {codebook_size} codes but the codes were made with "
                         f"{info['codebook_size']}: pass the tokenizer that encoded {args.codes_dir}")  # fmt: skip
    model = build_model(vqvae, info)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    check_strategy(accelerator, args.use_ema)
    vocabulary = CodeVocabulary.from_config(model.config)
    for name, dataset in (("train", None if args.streaming else train_dataset), ("validation", validation_dataset)):
        if dataset is not None:  # a stream's rows are checked batch by batch (`checked_stream_batch`)
            check_conditions(vocabulary, dataset, name)
    feature_network = feature_network_of(args, accelerator)

    if args.streaming:  # each process reads its share of the shards; its position is saved with checkpoints
        batches = streaming_batches(accelerator, train_dataset, args, partial(checked_stream_batch, vocabulary))
        max_train_steps = args.max_train_steps
    else:
        train_dataloader = torch.utils.data.DataLoader(
            train_dataset,
            batch_size=args.train_batch_size,
            sampler=EpochSeededSampler(len(train_dataset), args.seed),
            collate_fn=collate_code_batch,
            drop_last=True,
            generator=torch.Generator().manual_seed(args.seed),
        )  # fmt: skip  (a generator of its own: else each epoch's iterator draws a seed from the global RNG)
        train_dataloader = accelerator.prepare(train_dataloader)
        steps_per_epoch, max_train_steps, num_epochs = training_schedule(args, train_dataloader)
    optimizer = make_optimizer(args, model, args.learning_rate, accelerator.device)
    lr_scheduler = make_lr_scheduler(args, optimizer, accelerator, max_train_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    validation_dataloader = None
    if validation_dataset is not None:
        validation_dataloader = accelerator.prepare(torch.utils.data.DataLoader(
            validation_dataset, batch_size=args.eval_batch_size, collate_fn=collate_code_batch))  # fmt: skip
    vqvae.to(accelerator.device)
    ema_model = make_ema(args, model, accelerator)

    layout = process_layout(accelerator, args.train_batch_size)
    global_step = resume_or_seed(accelerator, output_dir, args.resume_from_checkpoint, args.seed, layout,
                                 (lr_scheduler,))  # fmt: skip
    guard = NonFiniteGuard(accelerator, output_dir, (args.log_steps, args.checkpointing_steps, args.validation_steps),
                           max_train_steps)  # fmt: skip
    if (done := finished_summary(output_dir, global_step, max_train_steps)) is not None:
        finish_trackers(accelerator)
        return done
    if not args.streaming:
        first_epoch, skip_batches = data_position(global_step, steps_per_epoch, args.gradient_accumulation_steps)
        batches = training_batches(accelerator, train_dataloader, first_epoch, num_epochs, skip_batches)
    accelerator.init_trackers(Path(script).stem, config={k: str(v) for k, v in public_arguments(args).items()})
    logger.info(
        f"{'streamed' if args.streaming else len(train_dataset)} code grids of {info['code_grid_size']}, "
        f"{CodeVocabulary.from_config(accelerator.unwrap_model(model).config)}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; {max_train_steps} steps"
    )

    def pipeline(prior) -> VQPipeline:
        """The pipeline around `prior`, the model with whole weights (`gathered_model`: under FSDP, a copy)."""
        pipe = make_pipeline(vqvae, prior, tokenizer)
        if info.get("level"):  # VQ-VAE-2: saved as a VQHierarchicalPipeline
            pipe = level_pipeline(pipe, info["level"], top_prior)
        pipe.set_progress_bar_config(disable=True)
        if prompts:
            pipe.card_prompt = prompts[0]
        return pipe

    def write_samples(prior, step: int) -> None:
        with evaluating(prior):
            grid = pipeline(prior).sample_grid(
                args.images_per_class, guidance_scale=args.guidance_scale, temperature=args.temperature,
                generator=torch.Generator(accelerator.device).manual_seed(args.seed), **sample_kwargs,
            )  # fmt: skip
        (output_dir / "samples").mkdir(parents=True, exist_ok=True)
        grid.save(output_dir / "samples" / f"step-{step:07d}.png")

    def validate() -> dict:
        return metrics(evaluate(model, validation_dataloader, loss_fn, accelerator, args.seed))

    def log_sample_quality(prior, step: int) -> dict | None:
        """FID & co. of `--fid_num_images` samples (main process: `prior` is None elsewhere), logged as
        validation/sample_*."""
        if feature_network is None or prior is None:
            return None
        with evaluating(prior):
            figures = sample_quality(pipeline(prior), feature_network, args, sample_kwargs, validation_dataset)
        accelerator.log({f"validation/sample_{k}": v for k, v in figures.items()}, step=step)
        logger.info(f"step {step} sample quality ({feature_network.name}): {figures}")
        return figures

    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)  # fmt: skip
    start_time, history = time.perf_counter(), []
    model.train()
    for batch in batches:
        if global_step >= max_train_steps:  # checked first: a run resumed at its last step trains nothing more
            break
        with accelerator.accumulate(model):
            loss = loss_fn(model, batch)
            apply_update(accelerator, loss, {"loss": loss}, model, optimizer, lr_scheduler, args.max_grad_norm,
                         global_step, guard)  # fmt: skip
        if not accelerator.sync_gradients:
            continue
        if ema_model is not None:
            ema_model.step(accelerator.unwrap_model(model).parameters())
        global_step += 1
        progress.update(1)
        guard.check_if_due(global_step)  # logging, checkpoint and validation steps: the one host sync

        if global_step % args.log_steps == 0 or global_step in (1, max_train_steps):
            logs = metrics({"loss": float(accelerator.reduce(loss.detach(), "mean"))})
            logs["lr"] = lr_scheduler.get_last_lr()[0]
            accelerator.log(logs, step=global_step)
            history.append({"step": global_step, **logs})
            progress.set_postfix(loss=f"{logs['loss']:.4f}")
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, layout)
        if global_step % args.validation_steps == 0:
            with ema_weights(ema_model, accelerator.unwrap_model(model)):
                if validation_dataloader is not None:
                    figures = validate()
                    accelerator.log({f"validation/{k}": v for k, v in figures.items()}, step=global_step)
                    logger.info(f"step {global_step} validation: {figures}")
                prior = gathered_model(accelerator, model)  # every process takes part; None off the main one
                if prior is not None:
                    write_samples(prior, global_step)
                quality = log_sample_quality(prior, global_step)
                if quality is not None:
                    history.append({"step": global_step, **{f"sample_{k}": v for k, v in quality.items()}})
            accelerator.wait_for_everyone()
    progress.close()

    summary = {"steps": global_step, "num_processes": accelerator.num_processes,
               "train_seconds": round(time.perf_counter() - start_time, 1), "history": history}  # fmt: skip
    with ema_weights(ema_model, accelerator.unwrap_model(model)):
        if validation_dataloader is not None:
            summary["validation"] = validate()
            logger.info(f"final validation: {summary['validation']}")
        prior = gathered_model(accelerator, model)
        quality = log_sample_quality(prior, global_step)
        if quality is not None:
            summary["sample_quality"] = {**quality, "feature_network": feature_network.name}
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            training = (f"`{training_command(script, argv)}`\n\n{global_step} steps on "
                        f"{accelerator.num_processes} process(es) ({accelerator.device.type}), "
                        f"{summary['train_seconds']} s; codes from `{info['tokenizer']}`.")  # fmt: skip
            pipe = pipeline(prior)
            prior.eval()
            pipe.save_pretrained(output_dir, training=training, evaluation=summary.get("validation"),
                                 repo_id=args.hub_model_id or output_dir.name)  # fmt: skip
            write_samples(prior, global_step)
            write_text_atomically(
                output_dir / "training_summary.json", json.dumps({**summary, "args": public_arguments(args)}, indent=2)
            )
            if args.push_to_hub:
                url = pipe.push_to_hub(args.hub_model_id or output_dir.name, token=args.hub_token,
                                       training=training, evaluation=summary.get("validation"))  # fmt: skip
                logger.info(f"pushed to {url}")
    finish_trackers(accelerator)
    return summary
