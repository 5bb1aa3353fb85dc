"""Compare the quantizers on CIFAR-10 at equal bits per image and equal training, then train the same prior on the
codes of the two best.

    python examples/compare_quantizers.py --train_parquet ../shared/data/cifar10/train.parquet \
        --test_parquet ../shared/data/cifar10/test.parquet --output_dir outputs/compare \
        --table outputs/compare/table.md --plot docs/quantizer_comparison.png

Every row is one `examples/train_vqgan.py` run with the same model, steps, batch and seed list; only the quantizer
flags differ, and each row spends the same bits per code (8×8 codes: 640 bits per image at 10 bits, 1,024 at 16).
Each tokenizer is scored by `vq-hub evaluate` (PSNR, SSIM, rFID, precision/recall on the CIFAR-10 classifier, usage,
perplexity); seconds per step are CPU time of a training step of the same model. Then `examples/encode_dataset.py`
and `examples/train_prior.py` train one small autoregressive prior per seed on the codes of the two 10-bit tokenizers
with the lowest rFID, and `vq-hub evaluate` scores its samples (FID). Every command run is printed; a finished run
is not run again (delete its folder to redo it), and `--report_only` tables the runs that have finished.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from quality_tables import cell  # mean over seeds ± half their spread, as the README's quality tables

from vq_hub.models.vq_model import QUANTIZER_TYPES
from vq_hub.utils.io import atomic_file, write_text_atomically

EXAMPLES = Path(__file__).resolve().parent

# name → (bits per code, train_vqgan.py flags of the quantizer). The codebook is 2^bits codes (FSQ: the nearest
# product of levels, as in the FSQ paper); residual rows spend the bits over two codes per position.
ROWS = {
    "vector-10": (10, "--num_vq_embeddings 1024"),  # the healthy recipe (the default)
    "fsq-10": (10, "--quantizer_type fsq --fsq_levels 8 5 5 5 --num_vq_embeddings 1000"),
    "lfq-10": (10, "--quantizer_type lfq --num_vq_embeddings 1024"),  # + the entropy loss (default weight 0.1)
    "bsq-10": (10, "--quantizer_type bsq --num_vq_embeddings 1024"),
    "simvq-10": (10, "--quantizer_type simvq --num_vq_embeddings 1024"),
    "residual-10": (10, "--quantizer_type residual --quantizer_depth 2 --num_vq_embeddings 32"),
    "vector-16": (16, "--num_vq_embeddings 65536"),
    "fsq-16": (16, "--quantizer_type fsq --fsq_levels 8 8 8 5 5 5 --num_vq_embeddings 64000"),
    "lfq-16": (16, "--quantizer_type lfq --num_vq_embeddings 65536"),
    "bsq-16": (16, "--quantizer_type bsq --num_vq_embeddings 65536"),
    "simvq-16": (16, "--quantizer_type simvq --num_vq_embeddings 65536"),
    "residual-16": (16, "--quantizer_type residual --quantizer_depth 2 --num_vq_embeddings 256"),
}

# What every row shares: a tiny VQ-VAE (4× downsampling: 8×8 codes of 32×32 images), the same optimiser and steps.
MODEL = ("--resolution 32 --block_out_channels 16 32 32 --latent_channels 16 --norm_num_groups 8 --vqvae "
         "--train_batch_size 32 --learning_rate 1e-3 --adam_beta1 0.9 --adam_beta2 0.99 "
         "--checkpointing_steps 1000000 --report_to none")  # fmt: skip
PRIOR = ("--hidden_size 128 --num_layers 2 --num_heads 4 --train_batch_size 32 --learning_rate 1e-3 "
         "--checkpointing_steps 1000000 --validation_steps 1000000 --report_to none")

COLUMNS = [("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.3f}"), ("rFID", "rfid", "{:.1f}"),
           ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
           ("usage", "codebook_usage", "{:.1%}"), ("perplexity", "perplexity", "{:.0f}"),
           ("CPU s/step", "cpu_seconds_per_step", "{:.3f}")]  # fmt: skip


def run(command: str, log: Path) -> None:
    """Run one command line, its output appended to `log` (the command is printed first, so the comparison's own
    output lists every command it ran)."""
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as output:
        result = subprocess.run(command, shell=True, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"failed (exit status {result.returncode}), see {log}")
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


def python(script: str) -> str:
    return f"{sys.executable} {EXAMPLES / script}"


def vq_hub_cli() -> str:
    """The `vq-hub` command of this Python environment."""
    script = Path(sys.executable).with_name("vq-hub")
    return str(script) if script.is_file() else "vq-hub"


def train_and_evaluate(args, name: str, seed: int) -> dict:
    """Train (unless done) and score one tokenizer; its report with seconds per step added (None when
    `--report_only` finds no report)."""
    folder = Path(args.output_dir) / f"{name}-seed{seed}"
    report_path, log = folder / "evaluation.json", Path(args.output_dir) / f"{name}-seed{seed}.log"
    if args.report_only and not report_path.is_file():
        return None
    if not report_path.is_file():
        if not (folder / "training_summary.json").is_file():
            run(f"{python('train_vqgan.py')} --train_parquet {args.train_parquet} {MODEL} {ROWS[name][1]} "
                f"--max_train_steps {args.max_train_steps} --seed {seed} --output_dir {folder}", log)  # fmt: skip
        run(f"{vq_hub_cli()} evaluate --model {folder} --images {args.test_parquet} --num-images {args.num_images} "
            f"--feature-network {args.feature_network} --no-progress --out {report_path}", log)  # fmt: skip
    result = json.loads(report_path.read_text())["results"][0]
    summary = json.loads((folder / "training_summary.json").read_text())
    return {**result, "seconds_per_step": summary["train_seconds"] / summary["steps"], "seed": seed,
            "cpu_seconds_per_step": cpu_seconds_per_step(args, name)}


def cpu_seconds_per_step(args, name: str, steps: int = 10) -> float:
    """CPU seconds of one training step of row `name` (forward, L1 + quantizer loss, backward, Adam) on a batch of 32
    random images, after one warm-up step: process time, so other programs sharing the machine do not count, as
    they do in the wall-clock seconds of a training run. Cached in `output_dir/cpu_seconds_per_step.json`."""
    import torch

    cache = Path(args.output_dir) / "cpu_seconds_per_step.json"
    timings = json.loads(cache.read_text()) if cache.is_file() else {}
    if name not in timings and not args.report_only:
        sys.path.insert(0, str(EXAMPLES))
        import train_vqgan  # its flags and model builder, so the model timed is the model trained

        torch.manual_seed(0)
        flags = f"--train_parquet {args.train_parquet} {MODEL} {ROWS[name][1]}".split()
        model = train_vqgan.build_model(train_vqgan.parse_args(flags))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        images = torch.rand(32, 3, 32, 32) * 2 - 1
        for step in range(steps + 1):
            if step == 1:
                start = time.process_time()
            output = model(images)
            loss = (output.sample - images).abs().mean() + output.quantizer_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        timings[name] = (time.process_time() - start) / steps
        write_text_atomically(cache, json.dumps(timings, indent=2) + "\n")
    return timings.get(name)


def train_prior(args, name: str, seed: int) -> dict:
    """Encode the training split with tokenizer `name` of `seed`, train the prior, score its samples (None when
    `--report_only` finds no report)."""
    tokenizer = Path(args.output_dir) / f"{name}-seed{seed}"
    codes, prior = tokenizer / "codes", tokenizer / "prior"
    report_path, log = prior / "evaluation.json", Path(args.output_dir) / f"{name}-seed{seed}-prior.log"
    if args.report_only and not report_path.is_file():
        return None
    if not report_path.is_file():
        if not (codes / "encoding.json").is_file():
            run(f"{python('encode_dataset.py')} --vqvae_name_or_path {tokenizer} --train_parquet {args.train_parquet} "
                f"--max_samples {args.prior_samples} --output_dir {codes}", log)  # fmt: skip
        if not (prior / "model_index.json").is_file():
            run(f"{python('train_prior.py')} --codes_dir {codes} {PRIOR} --max_train_steps {args.prior_steps} "
                f"--seed {seed} --output_dir {prior}", log)  # fmt: skip
        run(f"{vq_hub_cli()} evaluate --model {prior} --num-images {args.prior_num_images} --seed {seed} "
            f"--feature-network {args.feature_network} --no-progress --out {report_path}", log)  # fmt: skip
    return {**json.loads(report_path.read_text())["results"][0], "seed": seed}


def markdown(results: dict[str, list[dict]], priors: dict[str, list[dict]], args) -> str:
    lines = ["| quantizer | bits/code | seeds | " + " | ".join(header for header, _, _ in COLUMNS) + " |",
             "|---|---:|---|" + "---:|" * len(COLUMNS)]  # fmt: skip
    for name, rows in results.items():
        cells = [cell(rows[:1] if key == "cpu_seconds_per_step" else rows, key, style) for _, key, style in COLUMNS]
        label, seeds = f"{name.rsplit('-', 1)[0]} (`{ROWS[name][1]}`)", ", ".join(str(row["seed"]) for row in rows)
        lines.append(f"| {label} | {ROWS[name][0]} | {seeds} | " + " | ".join(cells) + " |")
    first = next(iter(results.values()))[0]
    network = first["feature_network"]["name"]
    lines.append(f"\n{args.max_train_steps} steps × 32 images per row (mean ± half the spread over the seeds); "
                 f"figures of `vq-hub evaluate` on {first['num_images']:,} test images, feature network {network} "
                 "(our classifier, not Inception v3); CPU s/step: process time of one training step on one thread "
                 "(`cpu_seconds_per_step`; the runs' wall-clock seconds, in their training_summary.json, count "
                 "whatever shared the machine).")  # fmt: skip
    if any(name.startswith("residual") for name in results):
        lines.append("Residual rows: usage and perplexity are `vq-hub evaluate`'s overall figures, the mean over "
                     "the depths' codebooks (each depth's are in its evaluation.json).")
    if priors:
        figures = [("fid", "{:.1f}"), ("precision", "{:.3f}"), ("recall", "{:.3f}"), ("class_accuracy", "{:.3f}")]
        lines += ["", "| prior on the codes of | FID | precision | recall | class accuracy |",
                  "|---|---:|---:|---:|---:|"]
        for name, rows in priors.items():
            cells = [cell(rows, key, style) for key, style in figures]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        first = next(iter(priors.values()))[0]
        prior = PRIOR.split(" --checkpointing")[0]
        lines.append(f"\nThe same autoregressive prior (`{prior}`, {args.prior_steps} steps) on the codes of "
                     f"{args.prior_samples:,} training images, one per tokenizer seed; FID of "
                     f"{first['num_images']:,} samples (every class in turn, guidance {first['guidance_scale']:g}) "
                     f"against the classifier's test-split statistics.")  # fmt: skip
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """PSNR and rFID per quantizer, one bar per codebook size, error bars = half the spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(name.rsplit("-", 1)[0] for name in results))
    bits = sorted({ROWS[name][0] for name in results})
    figure, axes = plt.subplots(1, 2, figsize=(8, 3))
    for axis, (label, key) in zip(axes, [("PSNR (dB, higher is better)", "psnr"), ("rFID (lower is better)", "rfid")]):
        width = 0.8 / len(bits)
        for index, bit in enumerate(bits):
            positions, means, spreads = [], [], []
            for position, kind in enumerate(kinds):
                rows = results.get(f"{kind}-{bit}")
                if rows:
                    values = [row[key] for row in rows]
                    positions.append(position + (index - (len(bits) - 1) / 2) * width)
                    means.append(statistics.fmean(values))
                    spreads.append((max(values) - min(values)) / 2)
            axis.bar(positions, means, width, yerr=spreads, capsize=2, label=f"{bit} bits per code")
        axis.set_xticks(range(len(kinds)), kinds, fontsize=8)
        axis.set_title(label, fontsize=9)
        axis.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylim(bottom=min(statistics.fmean(r["psnr"] for r in rows) for rows in results.values()) - 2)
    axes[0].legend(fontsize=7)
    figure.suptitle("CIFAR-10 tokenizers, 8×8 codes, equal bits and training (tiny models, CPU)", fontsize=9)
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)


def seeds_of(args, name: str) -> list[int]:
    return args.seeds if ROWS[name][0] <= 10 or not args.large_codebook_seeds else args.large_codebook_seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_parquet", required=True)
    parser.add_argument("--test_parquet", required=True)
    parser.add_argument("--feature_network", default=str(EXAMPLES.parent / "checkpoints" / "cifar10-classifier"))
    parser.add_argument("--output_dir", default="outputs/compare")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS),
                        help="Rows to run (default: all whose quantizer this vq_hub has).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--large_codebook_seeds", type=int, nargs="+",
                        help="Seeds of the rows above 10 bits per code (default: --seeds), to fit a time budget.")
    parser.add_argument("--max_train_steps", type=int, default=200)
    parser.add_argument("--num_images", type=int, default=1000, help="Test images reconstructed, prior samples.")
    parser.add_argument("--num_priors", type=int, default=2, help="Priors on the 10-bit tokenizers of lowest rFID.")
    parser.add_argument("--prior_rows", nargs="+", choices=list(ROWS),
                        help="Tokenizers whose codes get a prior (default: the --num_priors best 10-bit ones).")
    parser.add_argument("--prior_seeds", type=int, nargs="+",
                        help="Tokenizer seeds whose codes get a prior (same seed for the prior; default: --seeds).")
    parser.add_argument("--prior_steps", type=int, default=300)
    parser.add_argument("--prior_num_images", type=int, default=500, help="Samples scored per prior.")
    parser.add_argument("--prior_samples", type=int, default=5000, help="Training images encoded for the prior.")
    parser.add_argument("--report_only", action="store_true",
                        help="Train nothing: table the runs that have finished (those left out are not listed).")
    parser.add_argument("--table", help="Markdown file for the table.")
    parser.add_argument("--plot", help="PNG file for the plot.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    rows = [name for name in args.rows if name.rsplit("-", 1)[0] in QUANTIZER_TYPES]
    skipped = sorted(set(args.rows) - set(rows))
    if skipped:
        print(f"skipped (this vq_hub has no such quantizer_type): {', '.join(skipped)}", flush=True)
    results = {name: [train_and_evaluate(args, name, seed) for seed in seeds_of(args, name)] for name in rows}
    results = {name: [row for row in runs if row] for name, runs in results.items() if any(runs)}
    ten_bits = sorted((name for name in results if ROWS[name][0] == 10),
                      key=lambda name: statistics.fmean(row["rfid"] for row in results[name]))  # fmt: skip
    prior_seeds = args.prior_seeds or args.seeds
    chosen = args.prior_rows or ten_bits[: args.num_priors]
    priors = {name: [train_prior(args, name, seed) for seed in prior_seeds] for name in chosen}
    priors = {name: [row for row in runs if row] for name, runs in priors.items() if any(runs)}
    text = markdown(results, priors, args)
    if args.table:
        write_text_atomically(Path(args.table), text + "\n")
    if args.plot:
        plot(results, Path(args.plot))
    return text


if __name__ == "__main__":
    print(main())
