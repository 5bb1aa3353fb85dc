"""How should a prior read a residual tokenizer's `(depth, h, w)` codes: position-major, depth-minor (each cell's
depths together, as RQ-Transformer flattens them) or depth-major (the whole depth-0 grid, then depth 1…)? Trains the
same small GPT-2 prior on the same codes in each order, for the same steps on the same batches, and compares the
held-out negative log-likelihood per code (nats; the total per image is the same quantity times h·w·depth, so the
order with the lower figure models the codes better), also split by depth.

    python examples/encode_dataset.py --vqvae_name_or_path rvq-tokenizer --output_dir rvq-codes
    python benchmarks/residual_code_order.py --codes rvq-codes --max_train_steps 400 --train_batch_size 32 --seeds 0 1

The codes folder is `encode_dataset.py`'s output for a residual tokenizer (its rows hold the codes position-major).
The result and the tokenizer it was measured on are in docs/tokenizers.md ("The order of residual codes").
"""

import argparse
import json
import sys
import time
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vq_hub import load_tokenizer
from vq_hub.code_levels import CODE_ORDER, CODE_ORDERS, codes_to_sequence, sequence_to_codes
from vq_hub.models.priors import CodeVocabulary, autoregressive_prior_config, next_code_loss


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", required=True, help="encode_dataset.py's folder of a residual tokenizer's codes.")
    parser.add_argument("--max_train_steps", type=int, default=1500)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", help="Write the results as JSON here.")
    return parser.parse_args(argv)


def load_split(folder: Path, name: str, info: dict, order: str) -> tuple[torch.LongTensor, torch.LongTensor]:
    """`(tokens (N, 1 + n), labels)`: the condition token then the codes in `order`."""
    table = datasets.load_dataset("parquet", data_files=str(folder / f"{name}.parquet"), split="train")
    stored = torch.tensor(table["codes"], dtype=torch.long)  # position-major, as encode_dataset.py writes them
    codes = sequence_to_codes(stored, tuple(info["code_grid_size"]), info["code_depth"], info.get("code_order",
                                                                                                   CODE_ORDER))  # fmt: skip
    labels = torch.tensor(table["label"], dtype=torch.long)
    return codes_to_sequence(codes, order), labels


def measure(args, info: dict, vqvae, order: str, seed: int) -> dict:
    folder = Path(args.codes)
    train_codes, train_labels = load_split(folder, "train", info, order)
    test_codes, test_labels = load_split(folder, "validation", info, order)
    torch.manual_seed(seed)
    config = autoregressive_prior_config(vqvae, info["num_classes"] or 0, resolution=info["resolution"],
                                         hidden_size=args.hidden_size, num_layers=args.num_layers,
                                         num_heads=args.num_heads)  # fmt: skip
    prior = AutoModelForCausalLM.from_config(config).train()
    vocabulary = CodeVocabulary.from_config(config)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=args.learning_rate, betas=(0.9, 0.95))
    draw = torch.Generator().manual_seed(seed)  # the same batches for every order
    start = time.perf_counter()
    for _ in range(args.max_train_steps):
        rows = torch.randint(0, len(train_codes), (args.train_batch_size,), generator=draw)
        conditions = vocabulary.condition_tokens(train_labels[rows] if info["num_classes"] else None, len(rows))
        tokens = torch.cat([conditions[:, None], train_codes[rows]], dim=1)
        loss = next_code_loss(prior(input_ids=tokens).logits, tokens, vocabulary.codebook_size)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    prior.eval()
    losses = []
    with torch.no_grad():
        for first in range(0, len(test_codes), 256):
            codes, labels = test_codes[first : first + 256], test_labels[first : first + 256]
            conditions = vocabulary.condition_tokens(labels if info["num_classes"] else None, len(codes))
            tokens = torch.cat([conditions[:, None], codes], dim=1)
            losses.append(next_code_loss(prior(input_ids=tokens).logits, tokens, vocabulary.codebook_size,
                                         reduction="none"))  # fmt: skip
    losses = torch.cat(losses)  # (N, n) in `order`: back to (N, depth, h, w) to split by depth
    by_depth = sequence_to_codes(losses, tuple(info["code_grid_size"]), info["code_depth"], order)
    return {"order": order, "seed": seed, "nll_per_code": float(losses.mean()),
            "nll_per_depth": [float(by_depth[:, depth].mean()) for depth in range(info["code_depth"])],
            "train_seconds": round(seconds, 1)}  # fmt: skip


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    info = json.loads((Path(args.codes) / "encoding.json").read_text())
    if info.get("code_depth", 1) < 2:
        raise SystemExit(f"--codes {args.codes}: these are not a residual tokenizer's codes (no code_depth ≥ 2)")
    vqvae = load_tokenizer(info["tokenizer"])
    results = []
    for seed in args.seeds:
        for order in CODE_ORDERS:
            results.append(measure(args, info, vqvae, order, seed))
            print(json.dumps(results[-1]), flush=True)
    print(f"{'order':<16}{'seed':>5}{'NLL/code':>10}  per depth")
    for row in results:
        depths = ", ".join(f"{value:.3f}" for value in row["nll_per_depth"])
        print(f"{row['order']:<16}{row['seed']:>5}{row['nll_per_code']:>10.4f}  {depths}")
    for order in CODE_ORDERS:
        mean = sum(row["nll_per_code"] for row in results if row["order"] == order) / len(args.seeds)
        print(f"{order}: mean NLL per code {mean:.4f} nats over {len(args.seeds)} seed(s)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
