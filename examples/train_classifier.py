"""Train the feature network of `vq_hub.evaluation`: a small CNN classifier, on a train split only, with Accelerate.

    accelerate launch examples/train_classifier.py \
        --train_parquet ../shared/data/fashion_mnist/train.parquet \
        --validation_parquet ../shared/data/fashion_mnist/test.parquet \
        --in_channels 1 --dataset fashion-mnist --output_dir checkpoints/fashion-mnist-classifier

The output folder loads with `ImageClassifier.from_pretrained(output_dir)`; it also holds the reference statistics of
the validation (test) split (`reference_statistics.safetensors`: feature mean and covariance in float64, a subset of
the features with their labels) that `vq-hub evaluate` compares samples with, and a model card with the test accuracy.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from vq_hub.data import image_to_tensor, load_image_dataset
from vq_hub.evaluation import REFERENCE_STATISTICS, ImageClassifier, ReferenceStatistics, extract_features
from vq_hub.scaling import data_position, process_layout
from vq_hub.streaming import add_streaming_arguments, check_streaming_arguments, stream_source, streaming_batches
from vq_hub.training_guards import NonFiniteGuard, destroys_process_group_after, finish_trackers
from vq_hub.training_utils import (
    EpochSeededSampler,
    add_optimization_arguments,
    add_output_arguments,
    apply_update,
    evaluating,
    make_lr_scheduler,
    finished_summary,
    make_optimizer,
    public_arguments,
    resume_or_seed,
    save_checkpoint,
    start_training,
    training_batches,
    training_command,
    training_schedule,
)  # fmt: skip
from vq_hub.utils.io import write_text_atomically

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data (train on a train split; --validation_* is the split reported and used "
                                     "for the reference statistics)")  # fmt: skip
    data.add_argument("--dataset_name", help="A dataset on the Hub (or a local dataset script/folder).")
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_data_dir", help="An imagefolder with the training images.")
    data.add_argument("--train_parquet", nargs="+", help="Parquet file(s) with image and label columns.")
    data.add_argument("--validation_parquet", nargs="+", help="Parquet file(s) of the test split.")
    data.add_argument("--validation_data_dir", help="An imagefolder of the test split.")
    data.add_argument("--validation_split", help="Split of --dataset_name to report, e.g. 'test'.")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="label")
    data.add_argument(
        "--resolution", type=int, default=32, help="Smaller images are padded (28 → 32), as for tokenizers."
    )
    data.add_argument("--dataset", required=True, help="A name for the dataset, e.g. fashion-mnist (recorded).")
    data.add_argument(
        "--crop_padding", type=int, default=2, help="Random crops of the image padded by this many pixels."
    )
    data.add_argument("--random_flip", action="store_true", help="Flip training images horizontally at random.")
    data.add_argument(
        "--max_reference_features", type=int, default=2000, help="Features kept for KID and precision/recall."
    )
    add_streaming_arguments(data)

    model = parser.add_argument_group("model")
    model.add_argument("--in_channels", type=int, default=3)
    model.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    model.add_argument("--layers_per_block", type=int, default=2)
    model.add_argument("--dropout", type=float, default=0.1)
    model.add_argument("--label_smoothing", type=float, default=0.1)

    add_optimization_arguments(parser, learning_rate=2e-3, betas=(0.9, 0.999), train_batch_size=128,
                               weight_decay=5e-4)  # fmt: skip
    add_output_arguments(parser, output_dir="classifier-output")
    args = parser.parse_args(argv)
    if sum(bool(x) for x in (args.dataset_name, args.train_data_dir, args.train_parquet, args.train_webdataset)) != 1:
        parser.error("give exactly one of --dataset_name, --train_data_dir, --train_parquet, --train_webdataset")
    check_streaming_arguments(parser, args)
    if not (args.validation_parquet or args.validation_data_dir or args.validation_split):
        parser.error("give the test split (--validation_parquet, --validation_data_dir or --validation_split): the "
                     "model card reports its accuracy and the reference statistics are computed on it")  # fmt: skip
    return args


def load_split(args: argparse.Namespace, validation: bool):
    """`(images uint8 (N, C, R, R), labels (N,), class names, description)` of one split, decoded once into memory."""
    if validation:
        dataset = load_image_dataset(args.dataset_name if args.validation_split else None, args.dataset_config_name,
                                     args.validation_data_dir, args.validation_parquet,
                                     split=args.validation_split or "train")  # fmt: skip
        source = args.validation_parquet or args.validation_data_dir or f"{args.dataset_name}:{args.validation_split}"
    else:
        dataset = load_image_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir,
                                     args.train_parquet)  # fmt: skip
        source = args.train_parquet or args.train_data_dir or f"{args.dataset_name}:train"
    for column in (args.image_column, args.label_column):
        if column not in dataset.column_names:
            raise SystemExit(f"the dataset has no column {column!r}; columns: {dataset.column_names}")
    feature = dataset.features[args.label_column]
    names = list(feature.names) if hasattr(feature, "names") else None
    pixels = [image_to_tensor(image, args.resolution, args.in_channels) for image in dataset[args.image_column]]
    images = ((torch.stack(pixels) + 1) * 127.5).round().to(torch.uint8)  # exact: image_to_tensor gives k/127.5 - 1
    source = " ".join(source) if isinstance(source, list) else source
    return images, torch.tensor(dataset[args.label_column], dtype=torch.long), names, source


def stream_row(args: argparse.Namespace):
    """A streamed row → `(image uint8 (C, R, R), label)`, as `load_split` prepares the rows it holds in memory."""

    def prepare(row: dict) -> tuple[torch.Tensor, int]:
        for column in (args.image_column, args.label_column):
            if column not in row:
                raise SystemExit(f"the stream has no column {column!r}; columns: {list(row)}")
        pixels = image_to_tensor(row[args.image_column], args.resolution, args.in_channels)
        return ((pixels + 1) * 127.5).round().to(torch.uint8), row[args.label_column]

    return prepare


def stack_rows(rows: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([image for image, _ in rows]), torch.tensor([label for _, label in rows], dtype=torch.long)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def augment(images: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Random crops of the black-padded images (and horizontal flips); global torch RNG, so resumable."""
    if padding:
        size = images.shape[-1]
        padded = F.pad(images, (padding,) * 4, value=-1.0)
        offsets = torch.randint(0, 2 * padding + 1, (images.shape[0], 2)).tolist()
        images = torch.stack([padded[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(offsets)])
    if flip:
        flipped = torch.rand(images.shape[0], device=images.device) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    return images


def evaluate(classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> dict:
    """Accuracy and cross-entropy on a whole split (main process; the split is small)."""
    with evaluating(classifier):
        _, logits = extract_features(classifier, to_pixels(images), batch_size)
    return {"accuracy": float((logits.argmax(1) == labels).double().mean()),
            "loss": float(F.cross_entropy(logits, labels)), "num_images": len(labels)}  # fmt: skip


CARD = """---
library_name: vq_hub
tags:
- vq_hub
- image-classification
- feature-network
---

# {title}

The feature network of `vq_hub.evaluation` for {dataset}: a {params:,}-parameter CNN classifier ({channels}×{size}×{size}
images in [-1, 1]; {layout}). Its {num_features}-d penultimate features serve FID, KID and precision/recall of generated
images, its logits the class accuracy and the classifier score (an Inception-Score analogue). These figures come from
this network, not from Inception v3: they compare runs scored with the same network, not with papers.

```python
from vq_hub.evaluation import ImageClassifier, ReferenceStatistics

classifier = ImageClassifier.from_pretrained("{repo_id}").eval()
reference = ReferenceStatistics.load("{repo_id}/reference_statistics.safetensors")   # local folder
```

```bash
vq-hub evaluate --model <a {dataset} pipeline or tokenizer> --feature-network {repo_id}
```

## Test accuracy

**{accuracy:.2%}** on {num_test:,} test images ({test_source}); test cross-entropy {loss:.4f}.

## Training

Trained on the train split only ({num_train} images, {train_source}), random crops (padding {crop_padding})
{flip}, label smoothing {label_smoothing}:

`{command}`

{steps} steps, batch {batch_size}, {seconds:.0f} s on {hardware}.

## Reference statistics

`reference_statistics.safetensors`: mean and covariance (float64) of the features of all {num_reference:,} test images,
and {num_kept:,} of the features (float32, drawn with seed {seed}) with their labels, for KID and precision/recall.
"""


@destroys_process_group_after  # not accelerator.end_training(): see its docstring (a gloo deadlock)
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = start_training(args)

    test_images, test_labels, test_names, test_source = load_split(args, validation=True)
    if args.streaming:  # the classes: the stream's ClassLabel, else those of the test split
        train_stream = stream_source(args)
        feature = (train_stream.features or {}).get(args.label_column)
        class_names, train_labels = getattr(feature, "names", None) or test_names, test_labels
        train_source = " ".join(args.train_parquet or args.train_webdataset or []) or args.train_data_dir or \
            f"{args.dataset_name}:train (streamed)"  # fmt: skip
    else:
        train_images, train_labels, class_names, train_source = load_split(args, validation=False)
    num_classes = len(class_names) if class_names else int(train_labels.max()) + 1
    classifier = ImageClassifier(
        in_channels=args.in_channels, sample_size=args.resolution, num_classes=num_classes, class_names=class_names,
        block_out_channels=tuple(args.block_out_channels), layers_per_block=args.layers_per_block,
        dropout=args.dropout, dataset=args.dataset,
    )  # fmt: skip

    if args.streaming:  # each process reads its share of the stream; its position is saved with checkpoints
        batches = streaming_batches(accelerator, train_stream, args, stack_rows, stream_row(args))
        max_train_steps, num_train = args.max_train_steps, "streamed"
    else:
        dataset = torch.utils.data.TensorDataset(train_images, train_labels)
        train_dataloader = torch.utils.data.DataLoader(
            dataset, batch_size=args.train_batch_size, sampler=EpochSeededSampler(len(dataset), args.seed),
            drop_last=True, generator=torch.Generator().manual_seed(args.seed),
        )  # fmt: skip
        train_dataloader = accelerator.prepare(train_dataloader)
        steps_per_epoch, max_train_steps, num_epochs = training_schedule(args, train_dataloader)
        num_train = f"{len(dataset):,}"
    optimizer = make_optimizer(args, classifier, args.learning_rate, accelerator.device)
    lr_scheduler = make_lr_scheduler(args, optimizer, accelerator, max_train_steps)
    classifier.to(memory_format=torch.channels_last)  # 1.7× faster convolutions on CPUs
    model, optimizer, lr_scheduler = accelerator.prepare(classifier, optimizer, lr_scheduler)

    layout = process_layout(accelerator, args.train_batch_size)
    global_step = resume_or_seed(accelerator, output_dir, args.resume_from_checkpoint, args.seed, layout,
                                 (lr_scheduler,))  # fmt: skip
    guard = NonFiniteGuard(accelerator, output_dir, (args.log_steps, args.checkpointing_steps, args.validation_steps),
                           max_train_steps)  # fmt: skip
    if (done := finished_summary(output_dir, global_step, max_train_steps)) is not None:
        finish_trackers(accelerator)
        return done
    if not args.streaming:
        first_epoch, skip = data_position(global_step, steps_per_epoch, args.gradient_accumulation_steps)
        batches = training_batches(accelerator, train_dataloader, first_epoch, num_epochs, skip)
    accelerator.init_trackers("train_classifier", config={k: str(v) for k, v in public_arguments(args).items()})
    logger.info(f"{num_train} training images, {num_classes} classes; "
                f"{sum(p.numel() for p in classifier.parameters()):,} parameters; {max_train_steps} steps")  # fmt: skip

    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)  # fmt: skip
    start_time, history = time.perf_counter(), []
    model.train()
    for images, labels in batches:
        if global_step >= max_train_steps:  # checked first: a run resumed at its last step trains nothing more
            break
        with accelerator.accumulate(model):
            images = augment(to_pixels(images), args.crop_padding, args.random_flip)
            logits = model(images.contiguous(memory_format=torch.channels_last)).logits
            loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
            apply_update(accelerator, loss, {"loss": loss}, model, optimizer, lr_scheduler, args.max_grad_norm,
                         global_step, guard)  # fmt: skip
        if not accelerator.sync_gradients:
            continue
        global_step += 1
        progress.update(1)
        guard.check_if_due(global_step)  # logging, checkpoint and validation steps: the one host sync
        if global_step % args.log_steps == 0 or global_step in (1, max_train_steps):
            logs = {"loss": float(accelerator.reduce(loss.detach(), "mean")), "lr": lr_scheduler.get_last_lr()[0]}
            accelerator.log(logs, step=global_step)
            history.append({"step": global_step, **logs})
            progress.set_postfix(loss=f"{logs['loss']:.4f}")
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit, layout)
        if global_step % args.validation_steps == 0 and accelerator.is_main_process:
            figures = evaluate(accelerator.unwrap_model(model), test_images, test_labels, args.eval_batch_size)
            accelerator.log({f"validation/{k}": v for k, v in figures.items()}, step=global_step)
            logger.info(f"step {global_step} test: {figures}")
    progress.close()

    summary = {"steps": global_step, "num_processes": accelerator.num_processes,
               "train_seconds": round(time.perf_counter() - start_time, 1), "history": history}  # fmt: skip
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        classifier = accelerator.unwrap_model(model).eval().to(memory_format=torch.contiguous_format)  # safetensors
        summary["validation"] = evaluate(classifier, test_images, test_labels, args.eval_batch_size)
        logger.info(f"final test: {summary['validation']}")
        features, _ = extract_features(classifier, to_pixels(test_images), args.eval_batch_size)
        reference = ReferenceStatistics.from_features(
            features, test_labels, args.max_reference_features, seed=args.seed, dataset=args.dataset,
            split="test", source=Path(test_source).name, feature_network=output_dir.name,
        )  # fmt: skip
        classifier.save_pretrained(output_dir)
        reference.save(output_dir / REFERENCE_STATISTICS)
        hardware = (f"{accelerator.num_processes} process(es), {accelerator.device.type} "
                    f"({platform.processor() or platform.machine()}), torch {torch.__version__}")  # fmt: skip
        card = CARD.format(
            title=output_dir.name, dataset=args.dataset, params=sum(p.numel() for p in classifier.parameters()),
            channels=args.in_channels, size=args.resolution, num_features=classifier.num_features,
            layout=f"stages {tuple(args.block_out_channels)}, {args.layers_per_block} conv(s) each",
            repo_id=str(output_dir), accuracy=summary["validation"]["accuracy"], num_test=len(test_labels),
            test_source=Path(test_source).name, loss=summary["validation"]["loss"], num_train=num_train,
            train_source=Path(train_source).name, crop_padding=args.crop_padding,
            flip="and horizontal flips" if args.random_flip else "(no flips)", label_smoothing=args.label_smoothing,
            command=training_command("train_classifier.py", argv), steps=global_step,
            batch_size=args.train_batch_size * accelerator.num_processes, seconds=summary["train_seconds"],
            hardware=hardware, num_reference=reference.num_images, num_kept=len(reference.features), seed=args.seed,
        )  # fmt: skip
        write_text_atomically(output_dir / "README.md", card)
        write_text_atomically(
            output_dir / "training_summary.json", json.dumps({**summary, "args": public_arguments(args)}, indent=2)
        )
    finish_trackers(accelerator)
    return summary


if __name__ == "__main__":
    main()
