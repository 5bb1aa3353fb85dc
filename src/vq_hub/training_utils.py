"""Pieces the Accelerate training scripts in `examples/` share: flags, seeded shuffling, atomic checkpoints, resume,
EMA weight swaps, optimizers and the update step. The loops themselves stay in the scripts; how a run stops (the NaN
guard, the process group's teardown) is in `training_guards.py`."""

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.training_utils import EMAModel

from .scaling import adapt_to_process_layout, resolve_gradient_accumulation, write_process_layout
from .utils.io import atomic_directory

if TYPE_CHECKING:
    from .training_guards import NonFiniteGuard

logger = get_logger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def add_optimization_arguments(
    parser: argparse.ArgumentParser,
    learning_rate: float,
    betas: tuple[float, float],
    train_batch_size: int,
    weight_decay: float = 0.0,
) -> argparse._ArgumentGroup:
    optim = parser.add_argument_group("optimization")
    optim.add_argument("--train_batch_size", type=int, default=train_batch_size, help="Per process.")
    optim.add_argument("--eval_batch_size", type=int, default=256, help="Per process.")
    optim.add_argument("--max_train_steps", type=int, help="Overrides --num_train_epochs.")
    optim.add_argument("--num_train_epochs", type=int, default=10)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--global_batch_size", type=int, help="Samples per optimizer step over all processes: sets "
                       "the accumulation steps for any process count (a run resumed on other hardware keeps it).")
    optim.add_argument("--learning_rate", type=float, default=learning_rate)
    optim.add_argument("--adam_beta1", type=float, default=betas[0])
    optim.add_argument("--adam_beta2", type=float, default=betas[1])
    optim.add_argument("--adam_weight_decay", type=float, default=weight_decay)
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--lr_scheduler", default="cosine")
    optim.add_argument("--lr_warmup_steps", type=int, default=100)
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"],
                       help="Autocast precision (default: accelerate's config or `accelerate launch --mixed_precision`). "
                       "The quantizer always runs in float32; fp16 scales the gradients of every optimizer.")  # fmt: skip
    optim.add_argument("--no_tf32", action="store_true",
                       help="On CUDA, keep float32 matmuls and convolutions exact (TF32 is on by default there).")
    optim.add_argument("--no_cudnn_benchmark", action="store_true",
                       help="On CUDA, do not let cuDNN time its convolution algorithms (on by default there).")
    optim.add_argument("--use_ema", action="store_true", help="Keep an EMA of the trained model's weights.")
    optim.add_argument("--ema_decay", type=float, default=0.999)
    optim.add_argument("--seed", type=int, default=0)
    return optim


def _positive_limit(text: str) -> int:
    """`--checkpoints_total_limit` is ≥ 1: keeping none would delete the checkpoint just written (no resume)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (checkpoints to keep), got {value}")
    return value


def add_output_arguments(parser: argparse.ArgumentParser, output_dir: str) -> argparse._ArgumentGroup:
    output = parser.add_argument_group("checkpoints, logging, output")
    output.add_argument("--output_dir", default=output_dir)
    output.add_argument("--checkpointing_steps", type=int, default=500)
    output.add_argument("--checkpoints_total_limit", type=_positive_limit,
                        help="Keep at most this many checkpoints (≥ 1; the newest are kept).")  # fmt: skip
    output.add_argument("--resume_from_checkpoint", help="'latest' or a checkpoint folder.")
    output.add_argument("--validation_steps", type=int, default=500)
    output.add_argument("--log_steps", type=int, default=50)
    output.add_argument("--report_to", default="tensorboard", help="Accelerate tracker(s), or 'none'.")
    output.add_argument("--logging_dir", default="logs")
    output.add_argument("--push_to_hub", action="store_true")
    output.add_argument("--hub_model_id")
    output.add_argument("--hub_token")
    return output


# Flags whose values never go into a card, a summary, a tracker or a log.
SECRET_ARGUMENTS = ("hub_token",)
REDACTED = "REDACTED"


def public_arguments(args: argparse.Namespace) -> dict:
    """The run's arguments as recorded in `training_summary.json` and tracker configs, secrets redacted."""
    return {name: REDACTED if name in SECRET_ARGUMENTS and value is not None else value
            for name, value in vars(args).items()}  # fmt: skip


def training_command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run, for model cards, with the values of secret flags redacted."""
    words = list(argv if argv is not None else sys.argv[1:])
    secret_flags = {f"--{name}" for name in SECRET_ARGUMENTS}
    for index, word in enumerate(words):
        flag = word.split("=", 1)[0]
        if flag in secret_flags and "=" in word:
            words[index] = f"{flag}={REDACTED}"
        elif index > 0 and words[index - 1] in secret_flags:
            words[index] = REDACTED
    return f"accelerate launch examples/{script} " + shlex.join(words)


class EpochSeededSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the batches an uninterrupted one would."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """The model in eval mode (no codebook updates, no dropout) under no_grad, then back to its previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def ema_weights(ema_model: EMAModel | None, model: torch.nn.Module):
    """Swap the EMA weights into `model` for the block, then put the training weights back (no-op without EMA)."""
    if ema_model is None:
        yield
        return
    ema_model.store(model.parameters())
    ema_model.copy_to(model.parameters())
    try:
        yield
    finally:
        ema_model.restore(model.parameters())


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, total_limit: int | None,
                    layout: dict | None = None) -> Path:  # fmt: skip
    """`accelerator.save_state` into a temporary folder, renamed when every process has written its part (an older
    checkpoint of the same step is swapped out whole, never deleted before the new one is in place); `layout`
    (`vq_hub.scaling.process_layout`) is recorded with it, so it can resume on another number of processes."""
    if total_limit is not None and (type(total_limit) is not int or total_limit < 1):
        raise ValueError(f"`total_limit` (--checkpoints_total_limit) must be a positive integer or None, got "
                         f"{total_limit!r}: keeping none would delete the checkpoint just written")  # fmt: skip
    final, staging = output_dir / f"checkpoint-{step}", output_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if layout is not None:
            write_process_layout(staging, layout)
        with atomic_directory(final, replaces=["*"]) as new:
            for entry in staging.iterdir():
                os.replace(entry, new / entry.name)
        staging.rmdir()
        if total_limit is not None:
            checkpoints = list_checkpoints(output_dir)
            for old in checkpoints[: max(len(checkpoints) - total_limit, 0)]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resume_or_seed(accelerator: Accelerator, output_dir: Path, checkpoint: str | None, seed: int,
                   layout: dict | None = None, lr_schedulers: tuple = ()) -> int:  # fmt: skip
    """Call once every model is built and prepared, just before the loop: resume from `checkpoint` (which restores
    each process's random state) or seed each process differently, so data-parallel ranks draw their own flips,
    timesteps, masks and class dropout (model initialisation, done earlier under the shared seed, agrees across ranks).
    With this run's `layout`, a checkpoint of another process count resumes (see `resume_from_checkpoint`).
    Returns the step to start from."""
    from accelerate.utils import set_seed

    set_seed(seed + accelerator.process_index)
    return resume_from_checkpoint(accelerator, output_dir, checkpoint, layout, lr_schedulers)


def resume_from_checkpoint(accelerator: Accelerator, output_dir: Path, checkpoint: str | None,
                           layout: dict | None = None, lr_schedulers: tuple = ()) -> int:  # fmt: skip
    """Load `checkpoint` ('latest' or a `checkpoint-N` folder) into the prepared objects; returns its step N. With
    this run's `layout`, a checkpoint of another global batch is refused and one of another process count has its
    `lr_schedulers` re-counted (`vq_hub.scaling.adapt_to_process_layout`)."""
    if not checkpoint:
        return 0
    if checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise SystemExit(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}")
        path = checkpoints[-1]
    else:
        path = Path(checkpoint)
        if not CHECKPOINT_PATTERN.match(path.name) or not path.is_dir():
            raise SystemExit(f"--resume_from_checkpoint {path}: not a checkpoint-<step> folder")
    accelerator.load_state(str(path))
    if layout is not None:
        adapt_to_process_layout(path, layout, lr_schedulers)
    logger.info(f"resumed from {path}", main_process_only=True)
    return int(CHECKPOINT_PATTERN.match(path.name).group(1))


def finished_summary(output_dir: Path, global_step: int, max_train_steps: int) -> dict | None:
    """The saved summary of a run resumed at (or past) its last step whose final model is already in `output_dir`:
    there is nothing left to train or save, and the saved model must not be overwritten. None otherwise."""
    summary_file = Path(output_dir) / "training_summary.json"
    if global_step < max_train_steps or not summary_file.is_file():
        return None
    logger.info(f"resumed at step {global_step}, which reaches --max_train_steps {max_train_steps}, and {output_dir} "
                "holds the final model: nothing to train or save", main_process_only=True)  # fmt: skip
    return json.loads(summary_file.read_text())


def training_schedule(args: argparse.Namespace, train_dataloader) -> tuple[int, int, int]:
    """`(steps_per_epoch, max_train_steps, num_epochs)` of a prepared (sharded) dataloader."""
    steps_per_epoch = -(-len(train_dataloader) // args.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise SystemExit("the training set is smaller than one batch per process: lower --train_batch_size")
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    return steps_per_epoch, max_train_steps, -(-max_train_steps // steps_per_epoch)


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay only the weights of linear and convolution layers (transformers' GPT-2 `Conv1D`
    included); codebooks, embeddings (also when tied to an output layer), norms and biases are not decayed — decay
    would shrink codes and embeddings towards zero and fight the normalisation layers."""
    from transformers.pytorch_utils import Conv1D

    from .quantizers import SimVQuantizer

    decayed_types = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, Conv1D)
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    # SimVQ's codebook is its linear map of a frozen basis: decaying the map would shrink every code.
    embedding_ids |= {id(p) for m in model.modules() if isinstance(m, SimVQuantizer)
                      for p in m.codebook_map.parameters()}  # fmt: skip
    decay_ids = {id(module.weight) for module in model.modules()
                 if isinstance(module, decayed_types) and id(module.weight) not in embedding_ids}  # fmt: skip
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) in decay_ids], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) not in decay_ids], "weight_decay": 0.0},
    ]


def make_optimizer(args: argparse.Namespace, model: torch.nn.Module, learning_rate: float,
                   device: torch.device | str = "cpu") -> torch.optim.AdamW:  # fmt: skip
    """AdamW over `model`'s trainable parameters with `weight_decay_groups` (the rule is in the docs), fused into one
    kernel per step when training on CUDA (the foreach default launches several per parameter group; on CPUs the
    fused kernel measured slower, so it stays off there)."""
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(weight_decay_groups(model, args.adam_weight_decay), lr=learning_rate,
                             betas=(args.adam_beta1, args.adam_beta2), fused=fused or None)  # fmt: skip


def configure_cuda(args: argparse.Namespace, device: torch.device) -> None:
    """GPU training defaults, as LlamaGen and diffusers' examples set them: TF32 tensor cores for float32 matmuls and
    convolutions, and cuDNN's algorithm search (`--no_tf32`, `--no_cudnn_benchmark` turn them off). No-op off CUDA."""
    if device.type != "cuda":
        return
    allow_tf32 = not getattr(args, "no_tf32", False)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = not getattr(args, "no_cudnn_benchmark", False)


def make_lr_scheduler(args: argparse.Namespace, optimizer, accelerator: Accelerator, max_train_steps: int):
    """diffusers' `get_scheduler`, counted in the units Accelerate steps a prepared scheduler: once per process."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )  # fmt: skip


def reset_restarted_codes(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Zero the optimizer state (Adam's moments) of the codebook rows a `VectorQuantizer` restarted since the last
    call, so a new code is not pushed by the momentum of the dead code it replaced. Call before `optimizer.step()`."""
    from .quantizers import VectorQuantizer

    for quantizer in model.modules():
        if not isinstance(quantizer, VectorQuantizer):
            continue
        rows = quantizer.pop_restarted_codes()
        state = optimizer.state.get(quantizer.embedding.weight) if rows is not None else None
        for value in (state or {}).values():
            if isinstance(value, torch.Tensor) and value.shape == quantizer.embedding.weight.shape:
                value.masked_fill_(rows.unsqueeze(1), 0)  # a mask, not an index: no host sync


def start_training(args: argparse.Namespace) -> Accelerator:
    """The Accelerator of the flags (accumulation, precision, trackers, logs under `output_dir`), logging set up, the
    seed set; each process says it started (the multi-process tests look for it)."""
    import logging

    from accelerate.utils import ProjectConfiguration, set_seed

    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    # --global_batch_size: the accumulation steps for this number of processes, known once Accelerate has started.
    args.gradient_accumulation_steps = resolve_gradient_accumulation(args, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = args.gradient_accumulation_steps
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    configure_cuda(args, accelerator.device)
    print(f"[rank {accelerator.process_index}/{accelerator.num_processes}] started on {accelerator.device}", flush=True)
    set_seed(args.seed)  # the same on every rank: models are initialised identically (see `resume_or_seed`)
    return accelerator


def make_ema(args: argparse.Namespace, model: torch.nn.Module, accelerator: Accelerator) -> EMAModel | None:
    """diffusers' EMA of the prepared model's weights with `--use_ema` (saved in checkpoints), else None."""
    if not args.use_ema:
        return None
    unwrapped = accelerator.unwrap_model(model)
    ema_model = EMAModel(unwrapped.parameters(), decay=args.ema_decay, model_cls=type(unwrapped),
                         model_config=unwrapped.config)  # fmt: skip
    ema_model.to(accelerator.device)
    accelerator.register_for_checkpointing(ema_model)
    return ema_model


def training_batches(accelerator: Accelerator, train_dataloader, first_epoch: int, num_epochs: int, skip_batches: int):
    """Every batch from epoch `first_epoch` on, the first `skip_batches` of that epoch skipped (a resumed run sees the
    batches an uninterrupted one would); the caller stops at its last step."""
    for epoch in range(first_epoch, num_epochs):
        train_dataloader.set_epoch(epoch)
        loader = train_dataloader
        if epoch == first_epoch and skip_batches:
            loader = accelerator.skip_first_batches(train_dataloader, skip_batches)
        yield from loader


def apply_update(accelerator: Accelerator, loss: torch.Tensor, terms: dict, module: torch.nn.Module, optimizer,
                 lr_scheduler, max_grad_norm: float, step: int, guard: "NonFiniteGuard") -> None:  # fmt: skip
    """Backward, clip and step one module (Accelerate skips the step while accumulating), the loss watched by `guard`
    (no host sync). Codes restarted in this step's forward start with fresh optimizer moments."""
    guard.watch(loss, terms, step + 1)  # the update that makes step + 1, as checkpoints and logs count it
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(module.parameters(), max_grad_norm)
        reset_restarted_codes(optimizer, module)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
