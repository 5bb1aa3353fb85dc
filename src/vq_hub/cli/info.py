"""`vq-hub info`: config, codebook, grid, parameter counts and recorded scores of a saved tokenizer or pipeline."""

import json

from ._common import load_pipeline, load_tokenizer, model_folder


def register(commands) -> None:
    parser = commands.add_parser("info", help="Config, codebook, grid and parameter counts of a saved model.")
    parser.add_argument("path", help="A tokenizer or pipeline folder, or a Hub repository id.")
    parser.set_defaults(run=run, model=None)


def run(args) -> str:
    from ..data import image_size

    folder = model_folder(args.path)
    lines = []
    if (folder / "model_index.json").is_file():
        pipe = load_pipeline(str(folder))
        prior = getattr(pipe, pipe.prior_component)
        lines += [
            f"pipeline: {type(pipe).__name__}",
            f"prior: {type(prior).__name__}, {sum(p.numel() for p in prior.parameters()):,} parameters",
            f"classes: {pipe.vocabulary.num_classes or 'unconditional'}",
        ]
        if hasattr(pipe, "tokenizer"):
            lines.append(f"text: prompts of up to {pipe.max_text_length} tokens, {type(pipe.tokenizer).__name__} "
                         f"with {len(pipe.tokenizer)} tokens")  # fmt: skip
        if hasattr(pipe, "scheduler"):
            config = pipe.scheduler.config
            lines.append(f"scheduler: {config.corruption} corruption, {config.num_train_timesteps} timesteps, "
                         f"{config.schedule} schedule")  # fmt: skip
        tokenizer = pipe.vqvae
    else:
        tokenizer = load_tokenizer(str(folder))
    height, width = image_size(tokenizer.config.sample_size)
    grid = tokenizer.code_grid_size(height, width)
    lines += [
        f"tokenizer: {type(tokenizer).__name__} ({tokenizer.config.quantizer_type} quantizer), "
        f"{sum(p.numel() for p in tokenizer.parameters()):,} parameters",
        f"codebook size: {tokenizer.codebook_size}",
        f"images: {tokenizer.config.in_channels}×{height}×{width} → codes {grid[0]}×{grid[1]}",
    ]
    summary = folder / "training_summary.json"
    if summary.is_file():
        validation = json.loads(summary.read_text()).get("validation") or {}
        recorded = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in validation.items())
        if recorded:
            lines.append(f"recorded evaluation: {recorded}")
    return "\n".join(lines)
