"""`vq-hub info`: config, codebook, grid, parameter counts and recorded scores of a saved tokenizer or pipeline."""

import json

from ._common import load_pipeline, load_tokenizer, model_folder


def register(commands) -> None:
    parser = commands.add_parser("info", help="Config, codebook, grid and parameter counts of a saved model.")
    parser.add_argument("path", help="A tokenizer or pipeline folder, or a Hub repository id.")
    parser.set_defaults(run=run, model=None)


def run(args) -> str:
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
        bottom_prior = getattr(pipe, "bottom_prior", None)  # a VQ-VAE-2 pipeline: `prior` above is its top prior
        if bottom_prior is not None:
            lines.append(f"bottom prior: {type(bottom_prior).__name__}, "
                         f"{sum(p.numel() for p in bottom_prior.parameters()):,} parameters, sees the top codes")  # fmt: skip
        names = pipe.class_names
        if names:
            lines.append("class names: " + ", ".join(f"{i} {name}" for i, name in enumerate(names)))
        if hasattr(pipe, "tokenizer"):
            from ..text import known_words

            lines.append(f"text: prompts of up to {pipe.max_text_length} tokens, {type(pipe.tokenizer).__name__} "
                         f"with {len(pipe.tokenizer)} tokens")  # fmt: skip
            text_encoder = getattr(pipe, "text_encoder", None)  # Parti / MUSE style: cross-attention to its states
            if text_encoder is not None:
                lines.append(f"text encoder: {type(text_encoder).__name__}, "
                             f"{sum(p.numel() for p in text_encoder.parameters()):,} parameters; the prior "
                             "cross-attends to its states")  # fmt: skip
            words = known_words(pipe.tokenizer)
            if len(words) <= 200:  # a word-level caption vocabulary: what prompts can say
                lines.append(f"vocabulary ({len(words)} words): {' '.join(words)}")
        if getattr(pipe, "scheduler", None) is not None:
            config = pipe.scheduler.config
            lines.append(f"scheduler: {config.corruption} corruption, {config.num_train_timesteps} timesteps, "
                         f"{config.schedule} schedule")  # fmt: skip
        tokenizer = pipe.vqvae
    else:
        tokenizer = load_tokenizer(str(folder))
    lines += tokenizer_lines(tokenizer)
    summary = folder / "training_summary.json"
    if summary.is_file():
        validation = json.loads(summary.read_text()).get("validation") or {}
        recorded = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in validation.items())
        if recorded:
            lines.append(f"recorded evaluation: {recorded}")
    return "\n".join(lines)


def tokenizer_lines(tokenizer) -> list[str]:
    """What a tokenizer is: its class and quantizers, codebook sizes and code grids (per level for VQ-VAE-2)."""
    from ..code_levels import code_grid_sizes, codebook_sizes, is_hierarchical, level_names, quantizers
    from ..data import image_size

    height, width = image_size(tokenizer.config.sample_size)
    kinds = ", ".join(sorted({type(quantizer).__name__ for quantizer in quantizers(tokenizer).values()}))
    parameters = f"{sum(p.numel() for p in tokenizer.parameters()):,} parameters"
    grids = [f"{grid[0]}×{grid[1]}" for grid in code_grid_sizes(tokenizer, height, width)]
    if not is_hierarchical(tokenizer):
        return [
            f"tokenizer: {type(tokenizer).__name__} ({tokenizer.config.quantizer_type} quantizer), {parameters}",
            f"codebook size: {codebook_sizes(tokenizer)[0]}",
            *quantizer_lines(tokenizer.quantize),
            f"images: {tokenizer.config.in_channels}×{height}×{width} → codes {grids[0]}"
            + (f"×{tokenizer.code_depth} (depth)" if tokenizer.code_depth > 1 else ""),
        ]
    details = [f"{name}: {line}" for name, quantizer in quantizers(tokenizer).items()
               for line in quantizer_lines(quantizer)]  # fmt: skip
    levels = ", ".join(f"{name} {grid} of {codebook}" for name, grid, codebook in
                       zip(level_names(tokenizer), grids, codebook_sizes(tokenizer)))  # fmt: skip
    return [
        f"tokenizer: {type(tokenizer).__name__} (two levels; {kinds}), {parameters}",
        f"codebook sizes: {', '.join(f'{n} {c}' for n, c in zip(level_names(tokenizer), codebook_sizes(tokenizer)))}",
        *details,
        f"images: {tokenizer.config.in_channels}×{height}×{width} → codes {levels}",
    ]


def quantizer_lines(quantizer) -> list[str]:
    """What a code is, for the quantizers whose codebook is not a stored table of vectors (binary codes, SimVQ) or
    that give several codes per position (residual)."""
    from ..quantizers import BinaryQuantizer, BinarySphericalQuantizer, ResidualQuantizer, SimVQuantizer

    if isinstance(quantizer, ResidualQuantizer):
        books = "one shared codebook" if quantizer.shared_codebook else f"{quantizer.num_codebooks} codebooks"
        first = quantizer.quantizer_at(0)
        vectors = f"{first.codebook_dim}-d{', l2-normalised' if first.use_l2_norm else ''}"
        return [f"codes: residual, depth {quantizer.depth} ({books} of {quantizer.codebook_size} {vectors} codes): "
                f"codes (B, {quantizer.depth}, h, w), depth d quantizes what depths 0…d−1 left"]  # fmt: skip

    if isinstance(quantizer, BinaryQuantizer):
        kind = "binary spherical (±1/√bits, unit-norm codes)" if isinstance(quantizer, BinarySphericalQuantizer) \
            else f"lookup-free (±{quantizer.code_scale:g})"  # fmt: skip
        weight = quantizer.entropy_weight
        schedule = f"{weight.start:g}" if weight.start == weight.end else \
            f"{weight.start:g} → {weight.end:g} over {weight.steps} steps (at step {int(weight.step)})"  # fmt: skip
        return [
            f"codes: {quantizer.bits} bits, {kind}: bit i of a code is the sign of channel i (no codebook search)",
            f"entropy loss: weight {schedule}, codebook-entropy γ {quantizer.codebook_entropy_weight:g}, "
            f"τ {quantizer.entropy_temperature:g}, groups of {quantizer.entropy_group_size} bits",
        ]
    if isinstance(quantizer, SimVQuantizer):
        return [f"codes: SimVQ, a frozen random {quantizer.codebook_size}×{quantizer.codebook_dim} codebook through a "
                "learned linear map"]  # fmt: skip
    return []
