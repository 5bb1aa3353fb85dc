"""Argument checks shared by the models, pipelines and scheduler: a wrong value is a ValueError or TypeError that names
the argument and what was expected, never a silent wrong answer (NaN in, code 0 out)."""

import math
import numbers

import numpy as np
import torch


def _scalar(value):
    """A 0-d tensor or numpy scalar as a Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_int(value, name: str, minimum: int | None = None) -> int:
    """An integer (Python, numpy or a 0-d tensor; not a bool) at least `minimum`, as a Python int."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be ≥ {minimum}, got {value}")
    return int(value)


def check_float(value, name: str, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False) -> float:  # fmt: skip
    """A finite real number (int, float, numpy or 0-d tensor; not a bool) within the bounds, as a Python float."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ValueError(f"`{name}` must be {'>' if exclusive_minimum else '≥'} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be ≤ {maximum}, got {value}")
    return float(value)


def check_generator(generator, batch_size: int, name: str = "generator"):
    """None, one `torch.Generator`, or a list of `batch_size` of them (one per image, as in diffusers)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch_size:
            raise ValueError(
                f"`{name}` is a list of {len(generator)} generators, but the batch has {batch_size} images"
            )
        return list(generator)
    raise TypeError(f"`{name}` must be a torch.Generator or a list of one per image, got {type(generator).__name__}")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """A ValueError when `tensor` holds NaN or ±inf (one host sync: keep it off per-step hot paths)."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"`{name}` holds NaN or infinite values")
