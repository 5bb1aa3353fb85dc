"""Every quantizer option a tokenizer config can hold, and the one function that builds a quantizer from them.

`VQVAEModel` keeps these options as flat config entries (diffusers' `VQModel` names); `HierarchicalVQModel` keeps one
dict of them per level. Both build their quantizers here, so an option added once works in both.
"""

import dataclasses
from dataclasses import dataclass

from .base import Quantizer
from .fsq import FSQuantizer
from .gumbel import GumbelQuantizer
from .vector import VectorQuantizer

QUANTIZER_TYPES = ("vector", "gumbel", "fsq")


@dataclass(frozen=True)
class QuantizerSettings:
    """The quantizer options of one tokenizer level, under their `VQVAEModel` config names (see its docstring)."""

    quantizer_type: str = "vector"
    num_vq_embeddings: int = 256
    commitment_beta: float = 0.25
    legacy_beta: bool = False
    codebook_dim: int | None = None
    use_l2_norm: bool = False
    use_ema: bool = False
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = False
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0
    gumbel_temperature: float = 1.0
    gumbel_kl_weight: float = 5e-4
    gumbel_straight_through: bool = False
    fsq_levels: list[int] | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict | None, argument: str = "quantizer") -> "QuantizerSettings":
        """Settings from a dict of options (missing ones take their defaults); an unknown name is an error that
        lists the known ones, not a silently ignored typo."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"`{argument}` has unknown quantizer option(s) {unknown}; known: {list(cls.names())}")
        if values.get("fsq_levels") is not None:
            values["fsq_levels"] = [int(level) for level in values["fsq_levels"]]
        return cls(**values)

    @classmethod
    def from_config(cls, config) -> "QuantizerSettings":
        """The options recorded as flat entries of a model config (`VQVAEModel`)."""
        return cls.from_dict({name: getattr(config, name) for name in cls.names() if hasattr(config, name)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def build(self, embedding_dim: int) -> Quantizer:
        """The quantizer of these settings for latents of `embedding_dim` channels."""
        if self.quantizer_type == "vector":
            return VectorQuantizer(
                self.num_vq_embeddings,
                embedding_dim,
                codebook_dim=self.codebook_dim,
                beta=self.commitment_beta,
                use_l2_norm=self.use_l2_norm,
                use_ema=self.use_ema,
                decay=self.ema_decay,
                epsilon=self.ema_epsilon,
                kmeans_init=self.kmeans_init,
                kmeans_iters=self.kmeans_iters,
                dead_code_threshold=self.dead_code_threshold,
                legacy_beta=self.legacy_beta,
            )
        if self.quantizer_type == "gumbel":
            return GumbelQuantizer(
                self.num_vq_embeddings,
                embedding_dim,
                temperature=self.gumbel_temperature,
                kl_weight=self.gumbel_kl_weight,
                straight_through=self.gumbel_straight_through,
            )
        if self.quantizer_type == "fsq":
            if not self.fsq_levels:
                raise ValueError("`fsq_levels` is required when `quantizer_type='fsq'`, e.g. [8, 5, 5, 5]")
            quantizer = FSQuantizer(self.fsq_levels, embedding_dim)
            if quantizer.codebook_size != self.num_vq_embeddings:
                raise ValueError(
                    f"`num_vq_embeddings` must equal the product of `fsq_levels` ({quantizer.codebook_size}) "
                    f"for quantizer_type='fsq', got {self.num_vq_embeddings}"
                )
            return quantizer
        raise ValueError(f"`quantizer_type` must be one of {QUANTIZER_TYPES}, got {self.quantizer_type!r}")
