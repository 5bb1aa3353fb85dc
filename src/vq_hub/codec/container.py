"""The `.vqz` container: a small header, the range-coded payload, and a CRC-32 of everything before it.

Layout (little-endian), format version 1 (version 2, written only for a residual tokenizer's codes, inserts a 2-byte
code depth D ≥ 2 after the grid width, moving every later field 2 bytes on; its payload codes h·w·D codes per image,
each position's depths together):

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
DEPTH_FORMAT_VERSION = 2  # version 1 with the code depth after the grid width
FLAG_LABELS = 1
_FIXED = struct.Struct("<4sHH32sHHIIIHBBIBB")  # magic … dtype, then the setting's length
_FIXED_WITH_DEPTH = struct.Struct("<4sHH32sHHHIIIHBBIBB")
_VERSION = struct.Struct("<4sH")
FIXED_LAYOUTS = {FORMAT_VERSION: _FIXED, DEPTH_FORMAT_VERSION: _FIXED_WITH_DEPTH}
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
    code_depth: int = 1


def codes_checksum(codes: np.ndarray, labels: np.ndarray | None) -> bytes:
    """First 16 bytes of SHA-256 over the labels (int16, if coded) and the codes (int32), little-endian."""
    digest = hashlib.sha256()
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype="<i2").tobytes())
    digest.update(np.ascontiguousarray(codes, dtype="<i4").tobytes())
    return digest.digest()[:16]


def pack_vqz(header: VQZHeader, payload: bytes) -> bytes:
    setting = header.arithmetic_setting.encode("ascii")[:255]
    version = FORMAT_VERSION if header.code_depth == 1 else DEPTH_FORMAT_VERSION  # one code per cell: version 1
    layout = FIXED_LAYOUTS[version]
    header_size = layout.size + len(setting) + _TAIL.size
    grid = (*header.grid_size, header.code_depth) if version == DEPTH_FORMAT_VERSION else header.grid_size
    fixed = layout.pack(MAGIC, version, header_size, header.model_hash, *grid,
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
    if len(data) < _VERSION.size:
        raise ValueError(f"the .vqz file is truncated: {len(data)} bytes, shorter than its fixed header")
    version = _VERSION.unpack_from(data)[1]
    if version not in FIXED_LAYOUTS:
        raise ValueError(f"the .vqz file has format version {version}; this vq_hub reads versions "
                         f"{sorted(FIXED_LAYOUTS)} (or the file is damaged)")  # fmt: skip
    layout = FIXED_LAYOUTS[version]
    if len(data) < layout.size:
        raise ValueError(f"the .vqz file is truncated: {len(data)} bytes, shorter than its fixed header")
    fields = list(layout.unpack_from(data))
    depth = fields.pop(6) if version == DEPTH_FORMAT_VERSION else 1
    (_, version, header_size, model_hash, height, width, codebook_size, num_images, batch_size, num_classes, flags,
     precision, min_frequency, dtype_code, setting_length) = fields  # fmt: skip
    if version == DEPTH_FORMAT_VERSION and depth < 2:  # depth 1 is written as version 1
        raise ValueError(f"the .vqz file is damaged: a version-2 file with code depth {depth} (at least 2)")
    fixed_size = layout.size
    if header_size != fixed_size + setting_length + _TAIL.size:
        raise ValueError("the .vqz file is damaged: its header size does not match its fields")
    if len(data) < header_size:
        raise ValueError(f"the .vqz file is truncated: {len(data)} bytes, shorter than its {header_size}-byte header")
    checksum, payload_size = _TAIL.unpack_from(data, fixed_size + setting_length)
    expected = header_size + payload_size + _CRC.size
    if len(data) < expected:
        raise ValueError(f"the .vqz file is truncated (or damaged): {len(data)} bytes, its header says {expected}")
    if len(data) > expected:
        raise ValueError(f"the .vqz file is damaged: {len(data)} bytes, its header says {expected}")
    (crc,) = _CRC.unpack_from(data, expected - _CRC.size)
    if zlib.crc32(data[: expected - _CRC.size]) != crc:
        raise ValueError("the .vqz file is damaged: its CRC-32 does not match its content")
    try:
        setting = data[fixed_size : fixed_size + setting_length].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the .vqz file is damaged: its arithmetic setting is not ASCII") from None
    header = VQZHeader(model_hash=model_hash, grid_size=(height, width), codebook_size=codebook_size,
                       num_images=num_images, batch_size=batch_size, num_classes=num_classes,
                       labels_coded=bool(flags & FLAG_LABELS), precision=precision, min_frequency=min_frequency,
                       dtype_code=dtype_code, arithmetic_setting=setting, codes_checksum=checksum,
                       code_depth=depth)  # fmt: skip
    if flags & ~FLAG_LABELS or payload_size % 4:
        raise ValueError("the .vqz file is damaged: unknown flags or a payload that is not whole 32-bit words")
    return header, data[header_size : header_size + payload_size]
