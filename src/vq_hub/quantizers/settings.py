"""Every quantizer option a tokenizer config can hold, and the one function that builds a quantizer from them.

`VQVAEModel` keeps these options as flat config entries (diffusers' `VQModel` names); `HierarchicalVQModel` keeps one
dict of them per level. Both build their quantizers here, so an option added once works in both.
"""

import dataclasses
from dataclasses import dataclass

from .base import Quantizer
from .bsq import BinarySphericalQuantizer
from .entropy import check_bits
from .fsq import FSQuantizer
from .gumbel import GumbelQuantizer
from .lfq import LookupFreeQuantizer
from .residual import ResidualQuantizer
from .simvq import SimVQuantizer
from .vector import VectorQuantizer

QUANTIZER_TYPES = ("vector", "gumbel", "fsq", "lfq", "bsq", "simvq", "residual")
# Codes per position of a residual quantizer whose `quantizer_depth` is left unset.
DEFAULT_RESIDUAL_DEPTH = 2

# The defaults of the vector quantizer's options left unset, by `quantizer_recipe`. "healthy" is what keeps codebooks
# in use (ViT-VQGAN / LlamaGen low-dim l2 codes, k-means init, restarts); "plain" is the VQ-VAE paper's quantizer.
QUANTIZER_RECIPES = {
    "healthy": {"codebook_dim": 16, "use_l2_norm": True, "kmeans_init": True, "dead_code_threshold": 0.5},
    "plain": {"codebook_dim": None, "use_l2_norm": False, "kmeans_init": False, "dead_code_threshold": 0.0},
}


def vector_quantizer_options(config, vq_embed_dim: int) -> dict:
    """`codebook_dim`, `use_l2_norm`, `kmeans_init`, `dead_code_threshold` of `config`, each unset one (None) taken
    from its `quantizer_recipe` (a recipe's low-dim codes are never wider than the latents)."""
    if config.quantizer_recipe not in QUANTIZER_RECIPES:
        raise ValueError(
            f"`quantizer_recipe` must be one of {sorted(QUANTIZER_RECIPES)}, got {config.quantizer_recipe!r}"
        )
    options = {}
    for name, default in QUANTIZER_RECIPES[config.quantizer_recipe].items():
        value = getattr(config, name)
        if value is None and name == "codebook_dim" and default is not None:
            default = min(default, vq_embed_dim)
        options[name] = default if value is None else value
    return options


@dataclass(frozen=True)
class QuantizerSettings:
    """The quantizer options of one tokenizer level, under their `VQVAEModel` config names (see its docstring); the
    vector quantizer's `codebook_dim`, `use_l2_norm`, `kmeans_init` and `dead_code_threshold` left unset (None) follow
    `quantizer_recipe`."""

    quantizer_type: str = "vector"
    num_vq_embeddings: int = 256
    commitment_beta: float = 0.25
    legacy_beta: bool = False
    quantizer_recipe: str = "healthy"
    codebook_dim: int | None = None
    use_l2_norm: bool | None = None
    use_ema: bool = False
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool | None = None
    kmeans_iters: int = 10
    dead_code_threshold: float | None = None
    gumbel_temperature: float = 1.0
    gumbel_kl_weight: float = 5e-4
    gumbel_straight_through: bool = False
    fsq_levels: list[int] | None = None
    lfq_scale: float = 1.0
    entropy_loss_weight: float = 0.1
    entropy_loss_weight_end: float | None = None
    entropy_loss_anneal_steps: int = 0
    codebook_entropy_weight: float = 1.0
    entropy_temperature: float | None = None
    entropy_group_size: int = 8
    quantizer_depth: int | None = None
    shared_codebook: bool = False

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

    @property
    def depth(self) -> int:
        """Codes per position: `quantizer_depth` (default 2) for a residual quantizer, else 1."""
        if self.quantizer_type != "residual":
            return 1
        return DEFAULT_RESIDUAL_DEPTH if self.quantizer_depth is None else self.quantizer_depth

    def build(self, embedding_dim: int) -> Quantizer:
        """The quantizer of these settings for latents of `embedding_dim` channels."""
        if self.quantizer_type != "residual" and (self.quantizer_depth is not None or self.shared_codebook):
            raise ValueError(f"`quantizer_depth` and `shared_codebook` are options of quantizer_type='residual', "
                             f"not {self.quantizer_type!r}")  # fmt: skip
        if self.quantizer_type in ("vector", "residual"):
            options = dict(
                beta=self.commitment_beta,
                use_ema=self.use_ema,
                decay=self.ema_decay,
                epsilon=self.ema_epsilon,
                kmeans_iters=self.kmeans_iters,
                legacy_beta=self.legacy_beta,
                **vector_quantizer_options(self, embedding_dim),
            )
            if self.quantizer_type == "vector":
                return VectorQuantizer(self.num_vq_embeddings, embedding_dim, **options)
            return ResidualQuantizer(self.num_vq_embeddings, embedding_dim, depth=self.depth,
                                     shared_codebook=self.shared_codebook, **options)  # fmt: skip
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
        if self.quantizer_type in ("lfq", "bsq"):
            check_bits(self.num_vq_embeddings, "num_vq_embeddings")  # the config's name in the error
            entropy = dict(
                beta=self.commitment_beta,
                entropy_loss_weight=self.entropy_loss_weight,
                entropy_loss_weight_end=self.entropy_loss_weight_end,
                entropy_loss_anneal_steps=self.entropy_loss_anneal_steps,
                codebook_entropy_weight=self.codebook_entropy_weight,
                entropy_temperature=self.entropy_temperature,
                entropy_group_size=self.entropy_group_size,
            )
            if self.quantizer_type == "lfq":
                return LookupFreeQuantizer(self.num_vq_embeddings, embedding_dim, scale=self.lfq_scale, **entropy)
            return BinarySphericalQuantizer(self.num_vq_embeddings, embedding_dim, **entropy)
        if self.quantizer_type == "simvq":
            if self.use_ema:
                raise ValueError("`use_ema` must be False for quantizer_type='simvq': its codebook is a linear map "
                                 "trained by gradient, with no EMA update")  # fmt: skip
            return SimVQuantizer(self.num_vq_embeddings, embedding_dim, codebook_dim=self.codebook_dim,
                                 beta=self.commitment_beta)  # fmt: skip
        raise ValueError(f"`quantizer_type` must be one of {QUANTIZER_TYPES}, got {self.quantizer_type!r}")
