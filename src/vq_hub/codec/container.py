"""The `.vqz` container: a small header, the range-coded payload, and a CRC-32 of everything before it.

Layout (little-endian), format version 1:

    offset  size  field
    0       4     magic b"\\x89VQZ"
    4       2     format version (1)
    6       2     header size in bytes (where the payload starts)
    8       32    model hash: SHA-256 of the tokenizer's and the prior's weights
    40      2+2   code grid height, width
    44      4     codebook size K
    48      4     number of images N
    52      4     batch size the prior ran at (the decoder must run the same batches)
    56      2     number of classes of the prior
    58      1     flags: bit 0 = class labels are coded at the head of the payload
    59      1     precision of the frequencies (bits; they sum to 2^precision)
    60      4     minimum frequency of every code
    64      1     dtype of the prior (1 float32, 2 float16, 3 bfloat16, 4 float64)
    65      1     length L of the arithmetic setting (ASCII, e.g. "torch 2.13.0+cpu, cpu, 1 thread")
    66      L     the arithmetic setting
    66+L    16    codes checksum: SHA-256 of the decoded labels and codes, first 16 bytes
    82+L    4     payload size P in bytes
    86+L    P     payload: the range coder's 32-bit words
    end−4   4     CRC-32 of every byte before it

`unpack_vqz` checks the magic, the version, the size and the CRC before anything else is believed, so a foreign,
truncated or damaged file is a `ValueError` that says which, and never reaches the decoder.
"""

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"\x89VQZ"
FORMAT_VERSION = 1
FLAG_LABELS = 1
_FIXED = struct.Struct("<4sHH32sHHIIIHBBIBB")  # magic … dtype, then the setting's length
_TAIL = struct.Struct("<16sI")  # codes checksum, payload size
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class VQZHeader:
    """Everything a decoder needs besides the model: what was coded, and how the coder ran."""

    model_hash: bytes
    grid_size: tuple[int, int]
    codebook_size: int
    num_images: int
    batch_size: int
    num_classes: int
    labels_coded: bool
    precision: int
    min_frequency: int
    dtype_code: int
    arithmetic_setting: str
    codes_checksum: bytes


def codes_checksum(codes: np.ndarray, labels: np.ndarray | None) -> bytes:
    """First 16 bytes of SHA-256 over the labels (int16, if coded) and the codes (int32), little-endian."""
    digest = hashlib.sha256()
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype="<i2").tobytes())
    digest.update(np.ascontiguousarray(codes, dtype="<i4").tobytes())
    return digest.digest()[:16]


def pack_vqz(header: VQZHeader, payload: bytes) -> bytes:
    setting = header.arithmetic_setting.encode("ascii")[:255]
    header_size = _FIXED.size + len(setting) + _TAIL.size
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, header_size, header.model_hash, *header.grid_size,
                        header.codebook_size, header.num_images, header.batch_size, header.num_classes,
                        FLAG_LABELS if header.labels_coded else 0, header.precision, header.min_frequency,
                        header.dtype_code, len(setting))  # fmt: skip
    body = fixed + setting + _TAIL.pack(header.codes_checksum, len(payload)) + payload
    return body + _CRC.pack(zlib.crc32(body))


def unpack_vqz(data: bytes) -> tuple[VQZHeader, bytes]:
    """`(header, payload)` of a `.vqz` file's bytes; a `ValueError` naming the problem for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"`data` must be the bytes of a .vqz file, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise ValueError("not a .vqz file: it does not start with the .vqz magic bytes")
    if len(data) < _FIXED.size:
        raise ValueError(f"the .vqz file is truncated: {len(data)} bytes, shorter than its fixed header")
    (_, version, header_size, model_hash, height, width, codebook_size, num_images, batch_size, num_classes, flags,
     precision, min_frequency, dtype_code, setting_length) = _FIXED.unpack_from(data)  # fmt: skip
    if version != FORMAT_VERSION:
        raise ValueError(f"the .vqz file has format version {version}; this vq_hub reads version {FORMAT_VERSION} "
                         "(or the file is damaged)")  # fmt: skip
    if header_size != _FIXED.size + setting_length + _TAIL.size:
        raise ValueError("the .vqz file is damaged: its header size does not match its fields")
    if len(data) < header_size:
        raise ValueError(f"the .vqz file is truncated: {len(data)} bytes, shorter than its {header_size}-byte header")
    checksum, payload_size = _TAIL.unpack_from(data, _FIXED.size + setting_length)
    expected = header_size + payload_size + _CRC.size
    if len(data) < expected:
        raise ValueError(f"the .vqz file is truncated (or damaged): {len(data)} bytes, its header says {expected}")
    if len(data) > expected:
        raise ValueError(f"the .vqz file is damaged: {len(data)} bytes, its header says {expected}")
    (crc,) = _CRC.unpack_from(data, expected - _CRC.size)
    if zlib.crc32(data[: expected - _CRC.size]) != crc:
        raise ValueError("the .vqz file is damaged: its CRC-32 does not match its content")
    try:
        setting = data[_FIXED.size : _FIXED.size + setting_length].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the .vqz file is damaged: its arithmetic setting is not ASCII") from None
    header = VQZHeader(model_hash=model_hash, grid_size=(height, width), codebook_size=codebook_size,
                       num_images=num_images, batch_size=batch_size, num_classes=num_classes,
                       labels_coded=bool(flags & FLAG_LABELS), precision=precision, min_frequency=min_frequency,
                       dtype_code=dtype_code, arithmetic_setting=setting, codes_checksum=checksum)  # fmt: skip
    if flags & ~FLAG_LABELS or payload_size % 4:
        raise ValueError("the .vqz file is damaged: unknown flags or a payload that is not whole 32-bit words")
    return header, data[header_size : header_size + payload_size]
