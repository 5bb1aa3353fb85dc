"""Compress code grids (or images) into `.vqz` bytes with an autoregressive pipeline's prior, and back."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from ..code_levels import codes_to_sequence, sequence_to_codes
from . import coder
from .container import VQZHeader, codes_checksum, pack_vqz, unpack_vqz
from .frequencies import MIN_FREQUENCY, PRECISION
from .identity import (
    DTYPE_CODES,
    DTYPES_BY_CODE,
    arithmetic_setting,
    fixed_arithmetic,
    model_fingerprint,
    prior_dtype,
)

DEFAULT_BATCH_SIZE = 256


@dataclass
class CodecOutput(BaseOutput):
    """
    What a `.vqz` file holds, decoded.

    Args:
        codes (`torch.LongTensor` of shape `(N, h, w)`): The code grids, exactly as they were compressed
            (`(N, depth, h, w)` for a residual tokenizer).
        class_labels (`torch.LongTensor` of shape `(N,)`, *optional*): The labels coded with them (-1 = none);
            `None` when the file was coded unconditionally.
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`, *optional*): The tokenizer's decoding of
            the codes (`decompress_images` only).
    """

    codes: torch.LongTensor | None = None
    class_labels: torch.LongTensor | None = None
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None


def _check_pipeline(pipe) -> None:
    from ..pipelines import VQAutoregressivePipeline

    if not isinstance(pipe, VQAutoregressivePipeline):
        raise TypeError(f"`pipe` must be a VQAutoregressivePipeline (the codec needs an autoregressive prior's "
                        f"next-code probabilities), got {type(pipe).__name__}")  # fmt: skip


def compress_codes(
    pipe,
    codes: torch.Tensor,
    class_labels: int | list[int] | torch.Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_frequency: int = MIN_FREQUENCY,
    progress: bool = False,
) -> bytes:
    """
    Range-code code grids with the pipeline's prior into the bytes of a `.vqz` file.

    Args:
        pipe ([`VQAutoregressivePipeline`]): Its prior gives the probabilities; its weights' hash goes in the header.
        codes (`torch.Tensor` of shape `(N, h, w)` or `(N, h·w)`): Integer codes on the prior's grid; a residual
            tokenizer's `(N, depth, h, w)`, or `(N, h·w·depth)` in the prior's order (`code_levels.CODE_ORDER`).
        class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): With a class-conditional prior, one label
            per image (or one for all; -1 = unknown): they are stored in the stream (log2(C + 1) bits each) and each
            image is coded with its class's distribution. `None` codes every image unconditionally (null class).
        batch_size (`int`, defaults to 256): Images per prior batch. It is recorded: the decoder runs the same
            batches, since a different batch layout may change the floats.
        min_frequency (`int`, defaults to 1): The least frequency (out of 2^24) of any code, so none is
            unencodable; the unlikeliest code costs at most 24 − log2(min_frequency) bits.
        progress (`bool`, defaults to `False`): Show a progress bar.
    """
    _check_pipeline(pipe)
    codes, labels = _check_inputs(pipe, codes, class_labels, batch_size)
    num_images = len(codes)
    with fixed_arithmetic(pipe):
        words = coder.encode(pipe, codes, labels, batch_size, PRECISION, min_frequency, progress)
    header = VQZHeader(
        model_hash=model_fingerprint(pipe), grid_size=pipe.code_grid_size, code_depth=pipe.code_depth,
        codebook_size=pipe.vocabulary.codebook_size,
        num_images=num_images, batch_size=batch_size, num_classes=pipe.vocabulary.num_classes,
        labels_coded=labels is not None, precision=PRECISION, min_frequency=min_frequency,
        dtype_code=DTYPE_CODES[prior_dtype(pipe)], arithmetic_setting=arithmetic_setting(pipe),
        codes_checksum=codes_checksum(codes.numpy(), None if labels is None else labels.numpy()),
    )  # fmt: skip
    return pack_vqz(header, words.astype("<u4").tobytes())


def _check_inputs(pipe, codes, class_labels, batch_size: int) -> tuple[torch.LongTensor, torch.LongTensor | None]:
    """`(N, h·w·depth)` codes on the CPU and `(N,)` labels or `None`, with a clear error for anything that does not
    fit."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= coder.MAX_BATCH_SIZE:
        raise ValueError(f"`batch_size` must be an integer in [1, {coder.MAX_BATCH_SIZE}] (a decoder must be able to "
                         f"run the same batches), got {batch_size!r}")  # fmt: skip
    height, width = pipe.code_grid_size
    grid = (height, width) if pipe.code_depth == 1 else (pipe.code_depth, height, width)
    codes = pipe.vocabulary.check_codes(torch.as_tensor(codes), "codes").cpu()
    if codes.ndim == len(grid) + 1 and tuple(codes.shape[1:]) == grid:
        codes = codes_to_sequence(codes)
    if codes.ndim != 2 or codes.shape[1] != pipe.num_codes:
        raise ValueError(f"`codes` must be (N, {', '.join(map(str, grid))}) grids for this prior, got shape "
                         f"{tuple(codes.shape)}")  # fmt: skip
    if not 1 <= len(codes) < 2**32:
        raise ValueError(f"`codes` must hold between 1 and 2^32 − 1 grids, got {len(codes)}")
    if class_labels is None:
        return codes, None
    labels = torch.as_tensor(class_labels)
    if labels.ndim == 0:
        labels = labels.expand(len(codes))
    if labels.shape != (len(codes),):
        raise ValueError(f"`class_labels` must be one label or {len(codes)} (one per grid), got shape "
                         f"{tuple(labels.shape)}")  # fmt: skip
    return codes, pipe.vocabulary.check_class_labels(labels, allow_null=True).cpu()


def read_header(data: bytes) -> VQZHeader:
    """The header of a `.vqz` file's bytes, after its magic, version, size and CRC-32 are checked."""
    return unpack_vqz(data)[0]


def decompress_codes(pipe, data: bytes, progress: bool = False) -> CodecOutput:
    """
    Decode the bytes of a `.vqz` file back into the exact code grids (and labels) that were compressed.

    Raises a `ValueError` naming the problem, before any decoding, for a file that is not a `.vqz` file, is
    truncated or damaged (CRC-32), was written with another model (weights hash), another grid or another prior
    dtype, or whose counts (images, batch size) its payload cannot hold; and during or after decoding when the
    payload turns out inconsistent — the CRC-32 is no MAC, so a crafted or re-checksummed file gets here — or the
    decoded codes do not match the checksum stored with them, which also happens when this machine's float
    arithmetic (torch version, device, threads) differs from the encoder's. The message says which is likelier.
    """
    _check_pipeline(pipe)
    header, payload = unpack_vqz(data)
    _check_header_fits(pipe, header)
    num_codes = header.grid_size[0] * header.grid_size[1] * header.code_depth
    try:  # counts first: nothing is allocated, and the prior does not run, for images the payload cannot hold
        coder.check_counts(header.num_images, num_codes, header.batch_size, header.num_classes, header.labels_coded,
                           header.codebook_size, header.precision, header.min_frequency, len(payload) // 4)  # fmt: skip
    except coder.PayloadError as error:
        raise ValueError(f"the .vqz file is damaged or crafted: {error}") from None
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    with fixed_arithmetic(pipe):
        try:
            codes, labels, used_up = coder.decode(pipe, words, header.num_images, num_codes, header.labels_coded,
                                                  header.batch_size, header.precision, header.min_frequency,
                                                  progress)  # fmt: skip
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as error:  # constriction's AssertionError or a Rust panic (a BaseException) included
            raise ValueError(_payload_message(pipe, header, f"the range decoder failed ({error})")) from error
    if labels is not None and bool((labels >= header.num_classes).any()):  # uniform labels: no floats involved
        raise ValueError("the .vqz file is damaged or crafted: its payload decodes to class labels outside the prior's "
                         f"{header.num_classes} classes")  # fmt: skip
    checksum = codes_checksum(codes.numpy(), None if labels is None else labels.numpy())
    if checksum != header.codes_checksum or not used_up:
        raise ValueError(_payload_message(pipe, header, "the decoded codes do not match their stored checksum"))
    return CodecOutput(codes=sequence_to_codes(codes, header.grid_size, header.code_depth), class_labels=labels)


def _check_header_fits(pipe, header: VQZHeader) -> None:
    """The file must come from this pipeline, run in the same dtype, with coder settings this version uses."""
    vocabulary = pipe.vocabulary
    dtype = DTYPES_BY_CODE.get(header.dtype_code)
    if dtype is None:
        raise ValueError(f"the .vqz file names an unknown prior dtype (code {header.dtype_code}): it is damaged")
    if dtype != pipe.prior.dtype:  # before the hash: a cast prior has other weight bytes, and this says why
        raise ValueError(f"the .vqz file was compressed with the prior in {dtype}, this pipeline's prior is "
                         f"{pipe.prior.dtype}: load it in {dtype} to decode")  # fmt: skip
    fingerprint = model_fingerprint(pipe)
    if header.model_hash != fingerprint:
        raise ValueError(f"the .vqz file was written with another model (weights hash {header.model_hash.hex()[:16]}…)"
                         f", not this pipeline's ({fingerprint.hex()[:16]}…): decode it with the pipeline that "
                         "compressed it")  # fmt: skip
    expected = (pipe.code_grid_size, pipe.code_depth, vocabulary.codebook_size, vocabulary.num_classes, PRECISION)
    found = (header.grid_size, header.code_depth, header.codebook_size, header.num_classes, header.precision)
    free = 2**PRECISION - header.codebook_size * header.min_frequency
    if found != expected or header.min_frequency < 1 or free < 1 or header.batch_size < 1 or header.num_images < 1:
        raise ValueError(f"the .vqz file's grid, depth, codebook, classes or coder settings {found} do not fit this "
                         f"pipeline {expected}, though its weights hash does: it was written by other software")  # fmt: skip


def _payload_message(pipe, header: VQZHeader, what: str) -> str:
    """A payload that decodes inconsistently: the file was altered (the CRC-32 recomputed, or crafted) or the prior's
    floats differ from the encoder's. Different arithmetic settings make the second likely; the same setting, the
    first (a CPU with other vector instructions can still round differently, so neither is certain)."""
    here = arithmetic_setting(pipe)
    if header.arithmetic_setting == here:
        return (f"{what}: the .vqz payload is damaged or crafted (it passed the CRC-32, which a rewriter can "
                f"recompute), or this CPU rounds the prior's floats differently from the encoder's though the setting "
                f"is the same ({here}, batch {header.batch_size}); no image is returned rather than a wrong "
                "one")  # fmt: skip
    return (f"{what}: the prior's floats here differ from the encoder's (compressed with {header.arithmetic_setting}, "
            f"batch {header.batch_size}; decoding with {here}), or the payload was altered. Decode on a machine set "
            "up like the encoder's; no image is returned rather than a wrong one")  # fmt: skip


# ------------------------------------------------------------------------------------------------- images and files


def compress_images(pipe, images, class_labels=None, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False,
                    min_frequency: int = MIN_FREQUENCY) -> bytes:  # fmt: skip
    """Tokenize images (PIL image(s) or a `(N, C, H, W)` tensor in [-1, 1] at the prior's resolution) and
    `compress_codes` them. The stored image is the tokenizer's reconstruction: the codec is lossy by the
    tokenizer, lossless after it."""
    _check_pipeline(pipe)
    with torch.no_grad():
        codes = pipe.encode_images(images).cpu()
    return compress_codes(pipe, codes, class_labels, batch_size, min_frequency, progress)


def decompress_images(pipe, data: bytes, output_type: str = "pil", progress: bool = False) -> CodecOutput:
    """`decompress_codes`, then the tokenizer decodes the grids into images of `output_type` ("pil", "np", "pt")."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}")
    output = decompress_codes(pipe, data, progress)
    images = [pipe.decode_codes(output.codes[start : start + 256], output_type)
              for start in range(0, len(output.codes), 256)]  # fmt: skip
    if output_type == "pil":
        output.images = [image for batch in images for image in batch]
    elif images:
        output.images = torch.cat(images) if output_type == "pt" else np.concatenate(images)
    return output


def save_vqz(data: bytes, path: str | os.PathLike) -> Path:
    """Write `.vqz` bytes through a temporary file (never half-written)."""
    from ..utils.io import atomic_file

    with atomic_file(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)
