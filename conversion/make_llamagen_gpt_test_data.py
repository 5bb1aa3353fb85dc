"""Make tests/data/llamagen_gpt/: a tiny LlamaGen class-conditional GPT built by LlamaGen's own code, and its outputs.

    python conversion/make_llamagen_gpt_test_data.py --llamagen /path/to/LlamaGen --output tests/data/llamagen_gpt

Records how the test data of tests/test_conversion_llamagen_gpt.py were made; CI never runs it (it needs a checkout
of https://github.com/FoundationVision/LlamaGen, of which `autoregressive/models/gpt.py` and `generate.py` are
imported, with `utils/drop_path.py` that gpt.py imports; they need only torch). Nothing of vq_hub is imported here.

The model is LlamaGen's `Transformer` (c2i) with its own `ModelArgs`, made small: 2 layers of width 64, 4 heads of
size 16, an 8×8 grid of codes from a codebook of 64, 10 classes plus the null class of classifier-free guidance.
LlamaGen-B has 12 layers of width 768, 12 heads of 64, a 16×16 (or 24×24) grid and 16,384 codes; every mapping the
converter does — the fused qkv split and permuted, the 2-D rotary table, the class embedding and its null row — is
exercised here. (No grouped key/value heads: LlamaGen's own KV cache cannot sample with `n_kv_head < n_head`, and
no released model uses them.) Every weight is LlamaGen's initialisation plus Gaussian noise (its
output layer starts at zero and its norms at one, which would hide a mapping mistake), rounded to float16 values; the
checkpoint stores them in float16 (`{"model": state_dict}`, LlamaGen's released format) and everything is computed in
float32 from exactly those values, in eval mode. Reference outputs:

- `logits`: `model(prefix, labels, input_pos=arange(1 + L))` for class labels `labels` (the last one the null class,
  `num_classes`) and code prefixes `prefix` (B, L): LlamaGen's logits at the class token and after every code;
- `greedy`, `greedy_cfg`: `generate(model, greedy_labels, 64, cfg_scale=…, sample_logits=False)` — LlamaGen's own
  KV-cache decoding (prefill, then `decode_n_tokens`), argmax codes, without and with classifier-free guidance;
- `freqs_cis`: LlamaGen's 2-D rotary table for this grid (`precompute_freqs_cis_2d`, the class token's row zero).

`reference.json` records the LlamaGen commit, the configuration, the seed, torch's version and the smallest margin
between the best and the second-best logit over every greedy step (codes are compared exactly; a margin far above
float32 rounding means no step is a near-tie that another summation order could flip).
"""

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch
from make_maskgit_test_data import noisy_half_values  # the same noise on every weight, rounded to float16 values
from safetensors.torch import save_file

SEED = 0
CONFIG = dict(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, num_classes=10,
              block_size=64, cls_token_num=1, class_dropout_prob=0.1, model_type="c2i")  # fmt: skip
LOGIT_LABELS = [3, 7, 10]  # 10 = num_classes: LlamaGen's null class
PREFIX_LENGTH = 20
GREEDY_LABELS = [3, 7]
CFG_SCALE = 4.0


def load_llamagen_modules(checkout: Path):
    sys.path.insert(0, str(checkout))  # gpt.py imports `utils.drop_path` from the checkout's root
    gpt = importlib.import_module("autoregressive.models.gpt")
    generate = importlib.import_module("autoregressive.models.generate")
    return gpt, generate


def build_model(gpt):
    torch.manual_seed(SEED)
    model = gpt.Transformer(gpt.ModelArgs(**CONFIG))
    return noisy_half_values(model, SEED + 1)  # float16 values, so the float16 checkpoint holds them exactly


@torch.no_grad()
def greedy_margin(model, labels: torch.Tensor, codes: torch.Tensor, cfg_scale: float) -> float:
    """Smallest (best − second best) of the logits LlamaGen's sampler chose from, recomputed without a KV cache."""
    for layer in model.layers:
        layer.attention.kv_cache = None
    steps = torch.arange(codes.shape[1])
    if cfg_scale > 1.0:
        conditions = torch.cat([labels, torch.full_like(labels, model.num_classes)])
        logits, _ = model(torch.cat([codes, codes])[:, :-1], conditions, input_pos=steps)
        conditional, unconditional = logits.chunk(2)
        logits = unconditional + (conditional - unconditional) * cfg_scale
    else:
        logits, _ = model(codes[:, :-1], labels, input_pos=steps)
    best = logits.topk(2, dim=-1).values
    return float((best[..., 0] - best[..., 1]).min())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llamagen", required=True, type=Path, help="A checkout of FoundationVision/LlamaGen.")
    parser.add_argument("--output", default="tests/data/llamagen_gpt", type=Path)
    parser.add_argument("--commit", help="The LlamaGen commit, when the checkout is not a git repository.")
    args = parser.parse_args(argv)

    gpt, generate = load_llamagen_modules(args.llamagen.resolve())
    model = build_model(gpt)
    state_dict = {key: value.half() for key, value in model.state_dict().items()}  # before generate adds caches

    labels = torch.tensor(LOGIT_LABELS)
    prefix = torch.randint(0, CONFIG["vocab_size"], (len(LOGIT_LABELS), PREFIX_LENGTH),
                           generator=torch.Generator().manual_seed(SEED + 2))  # fmt: skip
    with torch.no_grad():
        logits, _ = model(prefix, labels, input_pos=torch.arange(1 + PREFIX_LENGTH))
    greedy_labels = torch.tensor(GREEDY_LABELS)
    num_codes = CONFIG["block_size"]
    greedy = generate.generate(model, greedy_labels, num_codes, cfg_scale=1.0, sample_logits=False, top_k=0)
    greedy_cfg = generate.generate(model, greedy_labels, num_codes, cfg_scale=CFG_SCALE, sample_logits=False, top_k=0)
    margins = {"greedy": greedy_margin(model, greedy_labels, greedy.long(), 1.0),
               "greedy_cfg": greedy_margin(model, greedy_labels, greedy_cfg.long(), CFG_SCALE)}  # fmt: skip

    args.output.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict}, args.output / "llamagen_gpt_tiny.pt")
    outputs = {"logit_labels": labels, "prefix": prefix, "logits": logits, "greedy_labels": greedy_labels,
               "greedy": greedy.long(), "greedy_cfg": greedy_cfg.long(), "freqs_cis": model.freqs_cis}  # fmt: skip
    save_file({name: value.contiguous() for name, value in outputs.items()}, args.output / "reference.safetensors")
    commit = args.commit
    if commit is None:
        result = subprocess.run(["git", "-C", str(args.llamagen), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = result.stdout.strip() if result.returncode == 0 else "unknown (not a git checkout; pass --commit)"
    record = {
        "source": "https://github.com/FoundationVision/LlamaGen", "commit": commit,
        "modules": ["autoregressive/models/gpt.py", "autoregressive/models/generate.py"], "license": "MIT",
        "model_args": CONFIG, "seed": SEED, "cfg_scale": CFG_SCALE, "torch": torch.__version__,
        "weights_dtype_in_checkpoint": "float16 (values exactly those of the float32 model that made the outputs)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "smallest_greedy_margin": margins,
        "codes_used": {"greedy": int(greedy.unique().numel()), "greedy_cfg": int(greedy_cfg.unique().numel())},
        "command": "python conversion/make_llamagen_gpt_test_data.py --llamagen LLAMAGEN_CHECKOUT --output "
                   "tests/data/llamagen_gpt",
    }  # fmt: skip
    (args.output / "reference.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
