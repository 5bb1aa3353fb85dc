"""What a factorised prior saves over a full 2^bits softmax, and what it costs in likelihood (docs/priors.md).

    OMP_NUM_THREADS=1 python benchmarks/bench_factorized_prior.py

1. Cost, at 10, 14 and 18 bits per code: parameters, the memory of a training step — the activations the forward
   pass saves for backward (counted exactly, by storage, with autograd's saved-tensor hooks: the part that grows with
   the batch) and the weights with their gradients and AdamW state (16 bytes a parameter) — and seconds per training
   step (forward, backward, AdamW; the median of `--steps`) of the same small GPT-2 backbone with the stock
   2^bits-row embedding and head (`GPT2LMHeadModel`, tied) and with a `FactorizedCodePrior` of two groups (bits/2
   each, conditional).
2. Likelihood, at 10 bits: a tiny LFQ tokenizer is trained on the shipped Fashion-MNIST subset (900 images; 32×32 →
   8×8 codes), its codes encoded, and each prior trained for the same steps on the same batches; the held-out NLL
   per code (the 100 other images) in bits. Priors: full head, factorised with conditional groups, factorised with
   independent groups.
"""

import argparse
import json
import statistics
import time

from contextlib import nullcontext

import torch
from transformers import AutoModelForCausalLM

from vq_hub import VQVAEModel, autoregressive_prior_config, factorized_prior_config
from vq_hub.data import image_to_tensor, shipped_fashion_mnist_splits
from vq_hub.models.factorized_prior import factorized_code_loss
from vq_hub.models.priors import next_code_loss

KINDS = ("full head", "factorised, conditional", "factorised, independent")


def tokenizer(bits: int) -> VQVAEModel:
    """A small LFQ tokenizer for 32×32 grey images: 8×8 codes of `bits` bits."""
    return VQVAEModel(in_channels=1, out_channels=1, sample_size=32, down_block_types=("DownEncoderBlock2D",) * 3,
                      up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 64, 64), layers_per_block=1,
                      latent_channels=16, norm_num_groups=16, quantizer_type="lfq",
                      num_vq_embeddings=2**bits)  # fmt: skip


def prior(kind: str, vqvae: VQVAEModel, args) -> torch.nn.Module:
    size = dict(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=4)
    if kind == "full head":
        return AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, **size))
    bits = vqvae.quantize.bits
    config = factorized_prior_config(vqvae, bits // 2, conditional_groups=kind.endswith("conditional"), **size)
    return AutoModelForCausalLM.from_config(config)


def code_losses(model, tokens: torch.LongTensor) -> torch.Tensor:
    """Per-code NLL in nats `(B, n)` of `[BOS, codes]` rows, for either kind of prior."""
    output = model(input_ids=tokens)
    codebook_size = model.config.codebook_size
    if hasattr(output, "group_logits"):
        return factorized_code_loss(output.group_logits[:, :-1], tokens[:, 1:], codebook_size,
                                    model.config.bits_per_group, reduction="none")  # fmt: skip
    return next_code_loss(output.logits, tokens, codebook_size, reduction="none")


def cost_row(bits: int, kind: str, args) -> dict:
    """One row of table 1."""
    torch.manual_seed(0)
    model = prior(kind, tokenizer(bits), args).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.cat([torch.full((args.batch_size, 1), 2**bits), torch.randint(0, 2**bits, (args.batch_size, 64))],
                       dim=1)  # fmt: skip
    seconds, saved = [], {}
    weights = {storage_key(parameter) for parameter in model.parameters()}

    def count(tensor: torch.Tensor) -> torch.Tensor:  # a saved activation, once per storage (weights are not)
        if storage_key(tensor) not in weights:
            saved[storage_key(tensor)] = tensor.untyped_storage().nbytes()
        return tensor

    for step in range(args.steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t) if step == 0 else nullcontext():
            loss = code_losses(model, tokens).mean()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in model.parameters())
    return {"bits": bits, "prior": kind, "parameters": parameters, "activations_mb": sum(saved.values()) / 2**20,
            "weights_and_optimizer_mb": 16 * parameters / 2**20, "seconds_per_step": statistics.median(seconds[1:])}


def storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def train_lfq_tokenizer(images: torch.Tensor, args) -> VQVAEModel:
    torch.manual_seed(0)
    model = tokenizer(args.likelihood_bits).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for step in range(args.tokenizer_steps):
        batch = images[torch.randint(0, len(images), (32,), generator=generator)]
        output = model(batch)
        mse = torch.nn.functional.mse_loss(output.sample, batch)
        loss = mse + output.quantizer_loss  # the quantizer's terms hold the (negative-going) entropy loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    print(f"tokenizer: {args.tokenizer_steps} steps, last reconstruction MSE {float(mse.detach()):.4f}, batch usage "
          f"{float(output.codebook_usage):.3f}", flush=True)  # fmt: skip
    return model.eval()


def likelihood_rows(args) -> list[dict]:
    splits = shipped_fashion_mnist_splits()
    images = {name: torch.stack([image_to_tensor(image, 32, 1) for image in split["image"]])
              for name, split in splits.items()}  # fmt: skip
    vqvae = train_lfq_tokenizer(images["train"], args)
    with torch.no_grad():
        codes = {name: vqvae.tokenize(batch).flatten(1) for name, batch in images.items()}
    bos = 2**args.likelihood_bits
    tokens = {name: torch.cat([torch.full((len(c), 1), bos), c], dim=1) for name, c in codes.items()}
    distinct = codes["train"].unique().numel()
    print(f"codes: {distinct} distinct of {bos} in {codes['train'].numel()} training codes", flush=True)
    rows = []
    for kind in KINDS:
        torch.manual_seed(0)
        model = prior(kind, vqvae, args).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
        generator = torch.Generator().manual_seed(1)  # the same batches for every prior
        start = time.perf_counter()
        for _ in range(args.prior_steps):
            picked = torch.randint(0, len(tokens["train"]), (args.prior_batch_size,), generator=generator)
            batch = tokens["train"][picked]
            optimizer.zero_grad(set_to_none=True)
            code_losses(model, batch).mean().backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            held_out = float(code_losses(model, tokens["validation"]).mean())
            train = float(code_losses(model, tokens["train"][:200]).mean())
        rows.append({"prior": kind, "parameters": sum(p.numel() for p in model.parameters()),
                     "held_out_bits_per_code": held_out / 0.6931471805599453,
                     "train_bits_per_code": train / 0.6931471805599453,
                     "train_seconds": time.perf_counter() - start})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[10, 14, 18])
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8, help="Rows of 65 tokens per cost-row step.")
    parser.add_argument("--steps", type=int, default=5, help="Timed training steps per cost row.")
    parser.add_argument("--likelihood_bits", type=int, default=10)
    parser.add_argument("--tokenizer_steps", type=int, default=400)
    parser.add_argument("--prior_steps", type=int, default=600)
    parser.add_argument("--prior_batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--skip_likelihood", action="store_true")
    args = parser.parse_args(argv)

    print("| bits | prior | parameters | activations saved for backward (MB) | weights + grads + AdamW (MB) | "
          "seconds per step |\n|---|---|---|---|---|---|")  # fmt: skip
    for bits in args.bits:
        for kind in KINDS[:2]:
            row = cost_row(bits, kind, args)
            print(f"| {bits} | {kind} | {row['parameters']:,} | {row['activations_mb']:.0f} | "
                  f"{row['weights_and_optimizer_mb']:.0f} | {row['seconds_per_step']:.3f} |", flush=True)  # fmt: skip
    if args.skip_likelihood:
        return
    rows = likelihood_rows(args)
    print(f"\n| prior ({args.likelihood_bits} bits) | parameters | held-out bits per code | training bits per code "
          "|\n|---|---|---|---|")  # fmt: skip
    for row in rows:
        print(f"| {row['prior']} | {row['parameters']:,} | {row['held_out_bits_per_code']:.3f} | "
              f"{row['train_bits_per_code']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
