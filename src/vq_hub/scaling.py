"""Training the same run at any scale through Accelerate: one global batch whatever the number of processes,
checkpoints that resume on another number of processes, and whole weights to save whatever the strategy (DDP, FSDP,
DeepSpeed). The training scripts call these; the loops stay in the scripts."""

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FSDPModule

logger = get_logger(__name__)
LAYOUT_FILE = "process_layout.json"


def resolve_gradient_accumulation(args: argparse.Namespace, num_processes: int) -> int:
    """The accumulation steps of the run: with `--global_batch_size`, those that make `--train_batch_size` ×
    processes × accumulation equal to it (so a run keeps its global batch when the number of processes changes);
    else `--gradient_accumulation_steps`."""
    global_batch, accumulation = getattr(args, "global_batch_size", None), args.gradient_accumulation_steps
    if global_batch is None:
        return accumulation
    per_micro_step = args.train_batch_size * num_processes
    if global_batch < 1 or global_batch % per_micro_step:
        raise ValueError(f"--global_batch_size {global_batch} must be a positive multiple of --train_batch_size "
                         f"{args.train_batch_size} × {num_processes} process(es) = {per_micro_step}")  # fmt: skip
    derived = global_batch // per_micro_step
    if accumulation not in (1, derived):
        raise ValueError(f"--gradient_accumulation_steps {accumulation} contradicts --global_batch_size {global_batch} "
                         f"(which needs {derived} on {num_processes} process(es)): give one of them")  # fmt: skip
    return derived


def process_layout(accelerator: Accelerator, train_batch_size: int) -> dict:
    """How a run splits its global batch: recorded in each checkpoint, checked on resume."""
    accumulation = accelerator.gradient_accumulation_steps
    return {"num_processes": accelerator.num_processes, "train_batch_size": train_batch_size,
            "gradient_accumulation_steps": accumulation,
            "global_batch_size": accelerator.num_processes * train_batch_size * accumulation}  # fmt: skip


def write_process_layout(folder: Path, layout: dict) -> None:
    """Write `layout` into a checkpoint folder being staged (main process; the folder is renamed once complete)."""
    (Path(folder) / LAYOUT_FILE).write_text(json.dumps(layout, indent=2))


def adapt_to_process_layout(checkpoint: Path, layout: dict, lr_schedulers: tuple = ()) -> None:
    """After `accelerator.load_state(checkpoint)`: refuse a checkpoint of another global batch (the data order and
    the learning-rate schedule would no longer follow the run), and re-count each prepared LR scheduler in this run's
    processes (Accelerate steps a scheduler once per process and optimizer step, see `make_lr_scheduler`). A
    checkpoint without a recorded layout (older than this check) is taken as it is."""
    path = Path(checkpoint) / LAYOUT_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    if saved["global_batch_size"] != layout["global_batch_size"]:
        raise SystemExit(
            f"{checkpoint} was written with a global batch of {saved['global_batch_size']} ({saved['num_processes']} "
            f"process(es) × --train_batch_size {saved['train_batch_size']} × {saved['gradient_accumulation_steps']} "
            f"accumulation steps); this run's is {layout['global_batch_size']} ({layout['num_processes']} × "
            f"{layout['train_batch_size']} × {layout['gradient_accumulation_steps']}). Pass --global_batch_size "
            f"{saved['global_batch_size']} to resume it on {layout['num_processes']} process(es)."
        )
    if saved["num_processes"] == layout["num_processes"]:
        return
    for prepared in lr_schedulers:
        scheduler = getattr(prepared, "scheduler", prepared)  # Accelerate's wrapper, or a plain scheduler
        steps = scheduler.last_epoch // saved["num_processes"]
        scheduler.last_epoch = steps * layout["num_processes"] - 1
        scheduler.step()  # sets last_epoch to the re-counted value and the optimizer's learning rates with it
    logger.info(f"resumed a {saved['num_processes']}-process checkpoint on {layout['num_processes']} process(es), "
                f"global batch {layout['global_batch_size']} kept", main_process_only=True)  # fmt: skip


def data_position(global_step: int, steps_per_epoch: int, gradient_accumulation_steps: int) -> tuple[int, int]:
    """`(epoch, batches to skip in it)` of this process at optimizer step `global_step`. With a global batch that
    stays the same, it names the same samples on any number of processes: the seeded shuffle depends only on the
    epoch, and process p of n reads the batches p, p + n, … of it (Accelerate's sharding)."""
    return global_step // steps_per_epoch, (global_step % steps_per_epoch) * gradient_accumulation_steps


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """transformers' activation checkpointing, non-reentrant (the variant that works under DDP and FSDP, and
    replays the random state, so dropout draws the same masks in the recomputation)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x's name (the old one warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def gathered_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module | None:
    """The prepared `model` with whole weights, for saving or sampling on the main process (None on the others).
    Under FSDP each process holds a shard: every process must call this (the weights are gathered with
    `accelerator.get_state_dict`) and the main process gets a copy of the model with them. Under DDP and DeepSpeed
    ZeRO-1/2 the weights are whole on every process: the unwrapped model itself."""
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type != DistributedType.FSDP:
        return unwrapped if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    model_class = type(unwrapped)
    if issubclass(model_class, FSDPModule):  # FSDP2 swaps in a subclass `FSDP<Model>(FSDPModule, Model)`
        model_class = next(base for base in model_class.__bases__ if base is not FSDPModule)
    copy = model_class(unwrapped.config)
    copy.load_state_dict(state_dict)
    return copy.to(accelerator.device).train(unwrapped.training)


def check_strategy(accelerator: Accelerator, use_ema: bool) -> None:
    """Refuse what a sharded strategy cannot do here: an EMA of FSDP-sharded weights (each process would keep the
    EMA of its shard, and a checkpoint keeps only the main process's)."""
    if use_ema and accelerator.distributed_type == DistributedType.FSDP:
        raise SystemExit("--use_ema is not supported under FSDP (each process holds a shard of the weights): drop it, "
                         "or train with DDP or DeepSpeed ZeRO-2, whose weights are whole on every process")  # fmt: skip
