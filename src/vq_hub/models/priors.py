"""Priors over codes are stock transformers models; this module fixes their small vocabulary and builds their configs.

Vocabulary of a prior over a codebook of K codes with C classes and P prefix tokens (M = 1 with a mask token, else 0):

    ids 0 … K−1          the codes
    id  K                BOS: starts every unconditional sequence; it is also the null class of classifier-free
                         guidance (a dropped label means "no class", which is exactly an unconditional sequence)
    ids K+1 … K+C        one token per class
    id  K+C+1            MASK (denoisers only): the absorbing state of mask diffusion
    ids K+C+1+M …        the P tokens of a second vocabulary that conditions the codes as a prefix (the words of a
        … K+C+M+P        caption, the codes of a coarser grid, …): prefix id j is joint id K+C+1+M+j
    last id              PAD: never a real input. Models whose embedding honours `padding_idx` (Llama, BERT, …) keep
                         that row at zero and untrained, so the pad must not be BOS or a class (vq_hub 0.1 made it BOS:
                         a Llama prior then saw a zero vector after BOS and started every unconditional row from a
                         uniform first code). Configs saved that way load unchanged (`with_pad_token=False`). PAD also
                         fills the unused slots of a prefix, always with attention mask 0.

An autoregressive sequence is `[p_1, …, p_L, condition token, c_1, …, c_n]`: L prefix slots (none without a prefix
vocabulary), the condition token (a class, or BOS), then n = h·w codes in raster order; a denoiser sees the same
sequence with some codes corrupted. The empty prefix (every slot PAD, attention mask 0) is the unconditional input:
prefix dropout during training teaches it, classifier-free guidance samples against it. Samplers only ever pick among
the first K logits. Without a prefix vocabulary nothing changes: the ids, the configs and the sequences are those of a
class-conditional prior.
"""

import inspect
from dataclasses import dataclass
from functools import cache as remember

import torch
import torch.nn.functional as F
from transformers import AutoConfig, PretrainedConfig

from ..data import image_size
from .vq_model import VQVAEModel


@dataclass(frozen=True)
class CodeVocabulary:
    """Token ids of a prior's vocabulary (see the module docstring)."""

    codebook_size: int
    num_classes: int = 0
    with_mask_token: bool = False
    with_pad_token: bool = True
    prefix_vocab_size: int = 0
    prefix_length: int = 0

    def __post_init__(self):
        if (self.prefix_vocab_size > 0) != (self.prefix_length > 0):
            raise ValueError(f"`prefix_vocab_size` ({self.prefix_vocab_size}) and `prefix_length` "
                             f"({self.prefix_length}) must both be positive (a prefix) or both 0 (none)")  # fmt: skip
        if self.prefix_length and not self.with_pad_token:
            raise ValueError("a prefix needs the pad token (`with_pad_token=True`): it fills the empty prefix slots")

    @property
    def bos_token_id(self) -> int:
        return self.codebook_size

    @property
    def null_class_token_id(self) -> int:
        return self.bos_token_id

    @property
    def mask_token_id(self) -> int:
        if not self.with_mask_token:
            raise ValueError("this vocabulary has no mask token (`with_mask_token=False`)")
        return self.codebook_size + 1 + self.num_classes

    @property
    def prefix_offset(self) -> int:
        """Joint id of prefix token 0 (prefix id j is joint id `prefix_offset + j`)."""
        return self.codebook_size + 1 + self.num_classes + int(self.with_mask_token)

    @property
    def pad_token_id(self) -> int | None:
        return self.vocab_size - 1 if self.with_pad_token else None

    @property
    def vocab_size(self) -> int:
        return self.prefix_offset + self.prefix_vocab_size + int(self.with_pad_token)

    @property
    def condition_length(self) -> int:
        """Tokens before the first code: the prefix slots and the condition token."""
        return self.prefix_length + 1

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "CodeVocabulary":
        """The vocabulary recorded in a prior's config by `autoregressive_prior_config` / `denoiser_config`."""
        missing = [name for name in ("codebook_size", "num_classes", "code_grid_size") if not hasattr(config, name)]
        if missing:
            raise ValueError(
                f"the prior's config ({type(config).__name__}) has no {missing}: a stock transformers config does not "
                "know vq_hub's code vocabulary; build it with `vq_hub.autoregressive_prior_config(vqvae, …)` or "
                "`vq_hub.denoiser_config(vqvae, …)`"
            )
        with_mask = getattr(config, "mask_token_id", None) is not None
        with_pad = getattr(config, "pad_token_id", None) != config.codebook_size  # 0.1 configs: pad = BOS
        prefix = getattr(config, "prefix_vocab_size", 0), getattr(config, "prefix_length", 0)
        vocabulary = cls(config.codebook_size, config.num_classes, with_mask, with_pad, *prefix)
        if getattr(config, "vocab_size", vocabulary.vocab_size) != vocabulary.vocab_size:
            raise ValueError(f"the prior's config has vocab_size {config.vocab_size}, but its code vocabulary "
                             f"{vocabulary} needs {vocabulary.vocab_size}")  # fmt: skip
        return vocabulary

    def condition_tokens(self, class_labels: torch.Tensor | None, batch_size: int, device=None,
                         validate: bool = True) -> torch.LongTensor:  # fmt: skip
        """`(B,)` first tokens: the class token of each label, BOS (= null class) for label -1 or no labels.
        `validate=False` skips the range check (a host sync), for training batches checked once when loaded."""
        if class_labels is None:
            return torch.full((batch_size,), self.bos_token_id, dtype=torch.long, device=device)
        if not validate:
            labels = torch.as_tensor(class_labels, device=device).long()
            return torch.where(labels < 0, self.bos_token_id, self.codebook_size + 1 + labels)
        labels = self.check_class_labels(class_labels, allow_null=True).to(device)
        return torch.where(labels < 0, self.bos_token_id, self.codebook_size + 1 + labels)

    def prefix_tokens(
        self, prefix_ids: torch.Tensor | None, prefix_mask: torch.Tensor | None = None, batch_size: int | None = None,
        device=None, validate: bool = True,
    ) -> tuple[torch.LongTensor, torch.LongTensor]:  # fmt: skip
        """`(tokens, attention_mask)`, both `(B, prefix_length)`: prefix ids `(B, L)` in [0, prefix_vocab_size)
        moved to their joint ids, PAD (mask 0) wherever `prefix_mask` is 0. `prefix_ids=None` is the empty prefix of
        `batch_size` rows — the unconditional input. A vocabulary without a prefix gives `(B, 0)` tensors.
        `validate=False` skips the range check of the ids (a host sync), for training batches checked when loaded."""
        if prefix_ids is None:
            if batch_size is None:
                raise ValueError("the empty prefix needs `batch_size`")
            shape = (batch_size, self.prefix_length)
            return (torch.full(shape, self.pad_token_id or 0, dtype=torch.long, device=device),
                    torch.zeros(shape, dtype=torch.long, device=device))  # fmt: skip
        if self.prefix_length == 0:
            raise ValueError("`prefix_ids` were given, but this prior has no prefix vocabulary (prefix_length=0)")
        ids = torch.as_tensor(prefix_ids, device=device)
        if (
            ids.dtype.is_floating_point
            or ids.dtype == torch.bool
            or ids.ndim != 2
            or ids.shape[1] != self.prefix_length
        ):
            raise ValueError(f"`prefix_ids` must be an integer tensor (B, {self.prefix_length}) (prefix_length), got "
                             f"{ids.dtype} {tuple(ids.shape)}")  # fmt: skip
        mask = torch.ones_like(ids) if prefix_mask is None else torch.as_tensor(prefix_mask, device=ids.device)
        if mask.shape != ids.shape:
            raise ValueError(
                f"`prefix_mask` {tuple(mask.shape)} must have the shape of `prefix_ids` {tuple(ids.shape)}"
            )
        used = mask.bool()
        if validate and used.any() and (ids[used].min() < 0 or ids[used].max() >= self.prefix_vocab_size):
            raise ValueError(f"`prefix_ids` must lie in [0, {self.prefix_vocab_size - 1}] (prefix_vocab_size="
                             f"{self.prefix_vocab_size}), got values in [{int(ids[used].min())}, "
                             f"{int(ids[used].max())}]")  # fmt: skip
        tokens = torch.where(used, ids.long() + self.prefix_offset, self.pad_token_id)
        return tokens, used.long()

    def start_tokens(
        self, condition_tokens: torch.LongTensor, prefix_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None, validate: bool = True,
    ) -> tuple[torch.LongTensor, torch.LongTensor]:  # fmt: skip
        """`(tokens, attention_mask)`, both `(B, prefix_length + 1)`: the prefix (the empty one when `prefix_ids` is
        None) then the condition token of each row — everything a sequence holds before its first code."""
        batch_size, device = condition_tokens.shape[0], condition_tokens.device
        prefix, mask = self.prefix_tokens(prefix_ids, prefix_mask, batch_size, device, validate=validate)
        if prefix.shape[0] != batch_size:
            raise ValueError(f"`prefix_ids` has {prefix.shape[0]} rows for {batch_size} condition tokens")
        tokens = torch.cat([prefix, condition_tokens[:, None].long()], dim=1)
        return tokens, torch.cat([mask, torch.ones_like(tokens[:, :1])], dim=1)

    def check_class_labels(self, class_labels: torch.Tensor, allow_null: bool = False) -> torch.LongTensor:
        labels = torch.as_tensor(class_labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
            raise ValueError(
                f"`class_labels` must be a 1D integer tensor or list, got {labels.dtype} {tuple(labels.shape)}"
            )
        if self.num_classes == 0:
            raise ValueError("`class_labels` were given, but this prior is unconditional (num_classes=0)")
        low = -1 if allow_null else 0
        if labels.numel() and (labels.min() < low or labels.max() >= self.num_classes):
            raise ValueError(
                f"`class_labels` must lie in [0, {self.num_classes - 1}] (num_classes={self.num_classes}), got "
                f"{labels.tolist()}"
            )
        return labels.long()

    def check_codes(self, codes: torch.Tensor, name: str = "codes") -> torch.LongTensor:
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"`{name}` must be an integer tensor of code ids")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"`{name}` must lie in [0, {self.codebook_size - 1}] (the codebook size is {self.codebook_size}), "
                f"got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.long()


def tokenizer_grid_size(vqvae: VQVAEModel, resolution: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """The code grid of the tokenizer's images (`resolution`: an int or (H, W); else its `sample_size`)."""
    return vqvae.code_grid_size(*image_size(resolution or vqvae.config.sample_size))


def level_codes(
    vqvae, level: str | None = None, resolution: int | tuple[int, int] | None = None
) -> tuple[int, tuple[int, int], int, int]:
    """`(codebook_size, grid, prefix_vocab_size, prefix_length)` of the codes a prior over `level` of `vqvae` models.
    A single-level tokenizer has one level (`level` None). For a two-level tokenizer (VQ-VAE-2) `level` is "top" or
    "bottom", and a bottom prior is conditioned on the top codes: its prefix is the top grid, from the top codebook."""
    from ..code_levels import code_grid_sizes, codebook_sizes, level_names

    names = level_names(vqvae)
    if level is None and len(names) == 1:
        level = names[0]
    if level not in names:
        raise ValueError(f"`level` must be one of {names} for this {type(vqvae).__name__}, got {level!r}")
    height, width = image_size(resolution or vqvae.config.sample_size)
    index, grids, sizes = names.index(level), code_grid_sizes(vqvae, height, width), codebook_sizes(vqvae)
    if index == 0:
        return sizes[0], tuple(grids[0]), 0, 0
    coarser = grids[index - 1]
    return sizes[index], tuple(grids[index]), sizes[index - 1], coarser[0] * coarser[1]


def _level_settings(vqvae, level, resolution, prefix_vocab_size: int, prefix_length: int):
    """`level_codes` with an explicit prefix winning over the level's own; the level is recorded in the config, and
    a residual tokenizer's `code_depth` (its codes per position: the prior's sequence holds h·w·depth codes)."""
    from ..code_levels import code_depths, level_names

    codebook_size, grid, level_prefix_vocab, level_prefix_length = level_codes(vqvae, level, resolution)
    if not prefix_vocab_size and not prefix_length:
        prefix_vocab_size, prefix_length = level_prefix_vocab, level_prefix_length
    recorded = {} if level is None else {"code_level": level}
    names = level_names(vqvae)
    depth = code_depths(vqvae)[names.index(level) if level is not None else 0]
    if depth > 1:  # configs of one code per position stay as they were
        recorded["code_depth"] = depth
    return codebook_size, grid, prefix_vocab_size, prefix_length, recorded


def _transformer_config(
    model_type: str, vocabulary: CodeVocabulary, grid: tuple[int, int], hidden_size: int, num_layers: int,
    num_heads: int, settings: dict, overrides: dict,
) -> PretrainedConfig:  # fmt: skip
    """A transformers config for `[prefix, condition token, h·w codes]` sequences over `vocabulary`, with the
    vocabulary and the grid recorded in it (`CodeVocabulary.from_config` reads them back). Configs without a prefix
    are exactly those of vq_hub 0.2 (no prefix keys)."""
    if vocabulary.prefix_length:
        settings = {**settings, "prefix_vocab_size": vocabulary.prefix_vocab_size,
                    "prefix_length": vocabulary.prefix_length}  # fmt: skip
    settings = dict(
        vocab_size=vocabulary.vocab_size,
        bos_token_id=vocabulary.bos_token_id,
        eos_token_id=vocabulary.bos_token_id,
        pad_token_id=vocabulary.pad_token_id,
        codebook_size=vocabulary.codebook_size,
        num_classes=vocabulary.num_classes,
        code_grid_size=list(grid),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=vocabulary.condition_length + grid[0] * grid[1] * settings.get("code_depth", 1),
        **settings,
    )
    settings.update(overrides)
    return AutoConfig.for_model(model_type, **settings)


def autoregressive_prior_config(
    vqvae: VQVAEModel,
    num_classes: int = 0,
    model_type: str = "gpt2",
    resolution: int | tuple[int, int] | None = None,
    hidden_size: int = 256,
    num_layers: int = 8,
    num_heads: int = 8,
    prefix_vocab_size: int = 0,
    prefix_length: int = 0,
    level: str | None = None,
    **overrides,
) -> PretrainedConfig:
    """A causal-LM config (any `AutoModelForCausalLM` model type) sized for `vqvae`'s codes: `from_config` it.
    `prefix_vocab_size` / `prefix_length` add a prefix of condition tokens from a second vocabulary (DALL-E's text
    tokens before the image codes). For a `HierarchicalVQModel`, `level` ("top" or "bottom") picks the codes; a
    bottom prior gets the top codes as its prefix."""
    codebook_size, grid, prefix_vocab_size, prefix_length, recorded = _level_settings(
        vqvae, level, resolution, prefix_vocab_size, prefix_length)  # fmt: skip
    vocabulary = CodeVocabulary(codebook_size, num_classes, prefix_vocab_size=prefix_vocab_size,
                                prefix_length=prefix_length)  # fmt: skip
    settings = {} if model_type == "gpt2" else {"intermediate_size": 4 * hidden_size}
    return _transformer_config(model_type, vocabulary, grid, hidden_size, num_layers, num_heads,
                               {**settings, **recorded}, overrides)  # fmt: skip


def denoiser_config(
    vqvae: VQVAEModel,
    num_classes: int = 0,
    model_type: str = "bert",
    resolution: int | tuple[int, int] | None = None,
    hidden_size: int = 256,
    num_layers: int = 8,
    num_heads: int = 8,
    prefix_vocab_size: int = 0,
    prefix_length: int = 0,
    level: str | None = None,
    **overrides,
) -> PretrainedConfig:
    """A bidirectional masked-LM config (`AutoModelForMaskedLM`, BERT by default) sized for `vqvae`'s codes, with an
    optional prefix of condition tokens (MUSE's text, as prefix tokens the denoiser attends to). `level` as in
    `autoregressive_prior_config`: a bottom denoiser sees the top codes as its prefix."""
    codebook_size, grid, prefix_vocab_size, prefix_length, recorded = _level_settings(
        vqvae, level, resolution, prefix_vocab_size, prefix_length)  # fmt: skip
    vocabulary = CodeVocabulary(codebook_size, num_classes, with_mask_token=True,
                                prefix_vocab_size=prefix_vocab_size, prefix_length=prefix_length)  # fmt: skip
    settings = {"intermediate_size": 4 * hidden_size, "mask_token_id": vocabulary.mask_token_id, **recorded}
    if model_type == "bert":
        settings["type_vocab_size"] = 1
    return _transformer_config(model_type, vocabulary, grid, hidden_size, num_layers, num_heads, settings,
                               overrides)  # fmt: skip


def next_code_loss(
    logits: torch.Tensor, tokens: torch.LongTensor, codebook_size: int, reduction: str = "mean",
    prefix_length: int = 0,
) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of next-code prediction, the one place where logits and targets are shifted.

    `tokens` is `(B, prefix_length + 1 + n)`: the prefix, a condition token, then n codes; `logits` is the causal LM's
    output for those tokens, `(B, prefix_length + 1 + n, V)`. The logit at position i predicts token i + 1, so the
    last logit predicts nothing and neither the prefix nor the condition token is ever a target. Only the K code
    logits enter the softmax, as in sampling. `reduction="none"` returns the `(B, n)` losses of every code.
    """
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"`logits` {tuple(logits.shape)} and `tokens` {tuple(tokens.shape)} must share (B, L)")
    if not 0 <= prefix_length < tokens.shape[1] - 1:
        raise ValueError(f"`prefix_length` {prefix_length} leaves no code in sequences of {tokens.shape[1]} tokens")
    predictions = logits[:, prefix_length:-1, :codebook_size]
    targets = tokens[:, prefix_length + 1 :]
    losses = F.cross_entropy(predictions.reshape(-1, codebook_size).float(), targets.reshape(-1), reduction="none")
    return losses.view(targets.shape) if reduction == "none" else losses.mean()


def denoising_loss(
    logits: torch.Tensor,
    clean: torch.LongTensor,
    noisy: torch.LongTensor,
    mask_token_id: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of the denoiser's prediction of the clean codes `(B, n)` from `noisy` ones.

    `logits` are `(B, n, K)`: the grid positions only (the condition token's position removed) and the K code logits
    only, as in sampling. With a mask token only masked positions count (the others are given); with uniform noise
    every position counts, since the denoiser cannot tell which codes were replaced. `reduction="none"` gives one
    loss per grid `(B,)`.
    """
    if logits.shape[:2] != clean.shape or noisy.shape != clean.shape:
        raise ValueError(f"`logits` {tuple(logits.shape)}, `clean` {tuple(clean.shape)} and `noisy` "
                         f"{tuple(noisy.shape)} must share (B, n)")  # fmt: skip
    losses = F.cross_entropy(logits.flatten(0, 1).float(), clean.flatten(), reduction="none").view(clean.shape)
    counted = torch.ones_like(clean, dtype=torch.bool) if mask_token_id is None else noisy == mask_token_id
    if reduction == "none":
        return (losses * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)
    return (losses * counted).sum() / counted.sum().clamp(min=1)


@remember
def cache_keyword(model_class: type) -> str:
    """The name under which `model_class.forward` takes its KV cache: `cache` since transformers 5.x deprecated
    `past_key_values` (a warning per call, removal announced), `past_key_values` in the releases before."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"
