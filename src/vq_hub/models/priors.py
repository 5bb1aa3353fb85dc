"""Priors over codes are stock transformers models; this module fixes their small vocabulary and builds their configs.

Vocabulary of a prior over a codebook of K codes with C classes:

    ids 0 … K−1          the codes
    id  K                BOS: starts every unconditional sequence; it is also the null class of classifier-free
                         guidance (a dropped label means "no class", which is exactly an unconditional sequence)
    ids K+1 … K+C        one token per class
    id  K+C+1            MASK (denoisers only): the absorbing state of mask diffusion
    last id              PAD: never a real input. Models whose embedding honours `padding_idx` (Llama, BERT, …) keep
                         that row at zero and untrained, so the pad must not be BOS or a class (vq_hub 0.1 made it BOS:
                         a Llama prior then saw a zero vector after BOS and started every unconditional row from a
                         uniform first code). Configs saved that way load unchanged (`with_pad_token=False`).

An autoregressive sequence is `[condition token, c_1, …, c_n]` with n = h·w codes in raster order; a denoiser sees the
same sequence with some codes corrupted. Samplers only ever pick among the first K logits.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AutoConfig, PretrainedConfig

from .vq_model import VQVAEModel


@dataclass(frozen=True)
class CodeVocabulary:
    """Token ids of a prior's vocabulary (see the module docstring)."""

    codebook_size: int
    num_classes: int = 0
    with_mask_token: bool = False
    with_pad_token: bool = True

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
    def pad_token_id(self) -> int | None:
        return self.vocab_size - 1 if self.with_pad_token else None

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 1 + self.num_classes + int(self.with_mask_token) + int(self.with_pad_token)

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
        vocabulary = cls(config.codebook_size, config.num_classes, with_mask, with_pad)
        if getattr(config, "vocab_size", vocabulary.vocab_size) != vocabulary.vocab_size:
            raise ValueError(f"the prior's config has vocab_size {config.vocab_size}, but its code vocabulary "
                             f"{vocabulary} needs {vocabulary.vocab_size}")  # fmt: skip
        return vocabulary

    def condition_tokens(self, class_labels: torch.Tensor | None, batch_size: int, device=None) -> torch.LongTensor:
        """`(B,)` first tokens: the class token of each label, BOS (= null class) for label -1 or no labels."""
        if class_labels is None:
            return torch.full((batch_size,), self.bos_token_id, dtype=torch.long, device=device)
        labels = self.check_class_labels(class_labels, allow_null=True).to(device)
        return torch.where(labels < 0, self.bos_token_id, self.codebook_size + 1 + labels)

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


def tokenizer_grid_size(vqvae: VQVAEModel, resolution: int | None = None) -> tuple[int, int]:
    """The code grid of the tokenizer's images (`resolution`, else its `sample_size`)."""
    size = resolution or vqvae.config.sample_size
    return vqvae.code_grid_size(size, size)


def _transformer_config(
    model_type: str, vocabulary: CodeVocabulary, grid: tuple[int, int], hidden_size: int, num_layers: int,
    num_heads: int, settings: dict, overrides: dict,
) -> PretrainedConfig:  # fmt: skip
    """A transformers config for `[condition token, h·w codes]` sequences over `vocabulary`, with the vocabulary and
    the grid recorded in it (`CodeVocabulary.from_config` reads them back)."""
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
        max_position_embeddings=1 + grid[0] * grid[1],
        **settings,
    )
    settings.update(overrides)
    return AutoConfig.for_model(model_type, **settings)


def autoregressive_prior_config(
    vqvae: VQVAEModel,
    num_classes: int = 0,
    model_type: str = "gpt2",
    resolution: int | None = None,
    hidden_size: int = 256,
    num_layers: int = 8,
    num_heads: int = 8,
    **overrides,
) -> PretrainedConfig:
    """A causal-LM config (any `AutoModelForCausalLM` model type) sized for `vqvae`'s codes: `from_config` it."""
    vocabulary = CodeVocabulary(vqvae.codebook_size, num_classes)
    settings = {} if model_type == "gpt2" else {"intermediate_size": 4 * hidden_size}
    return _transformer_config(model_type, vocabulary, tokenizer_grid_size(vqvae, resolution), hidden_size,
                               num_layers, num_heads, settings, overrides)  # fmt: skip


def denoiser_config(
    vqvae: VQVAEModel,
    num_classes: int = 0,
    model_type: str = "bert",
    resolution: int | None = None,
    hidden_size: int = 256,
    num_layers: int = 8,
    num_heads: int = 8,
    **overrides,
) -> PretrainedConfig:
    """A bidirectional masked-LM config (`AutoModelForMaskedLM`, BERT by default) sized for `vqvae`'s codes."""
    vocabulary = CodeVocabulary(vqvae.codebook_size, num_classes, with_mask_token=True)
    settings = {"intermediate_size": 4 * hidden_size, "mask_token_id": vocabulary.mask_token_id}
    if model_type == "bert":
        settings["type_vocab_size"] = 1
    return _transformer_config(model_type, vocabulary, tokenizer_grid_size(vqvae, resolution), hidden_size,
                               num_layers, num_heads, settings, overrides)  # fmt: skip


def next_code_loss(
    logits: torch.Tensor, tokens: torch.LongTensor, codebook_size: int, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of next-code prediction, the one place where logits and targets are shifted.

    `tokens` is `(B, 1 + n)`: a condition token then n codes; `logits` is the causal LM's output for those tokens,
    `(B, 1 + n, V)`. The logit at position i predicts token i + 1, so the last logit predicts nothing and the
    condition token is never a target. Only the K code logits enter the softmax, as in sampling. `reduction="none"`
    returns the `(B, n)` losses of every code.
    """
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"`logits` {tuple(logits.shape)} and `tokens` {tuple(tokens.shape)} must share (B, L)")
    predictions = logits[:, :-1, :codebook_size]
    targets = tokens[:, 1:]
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
