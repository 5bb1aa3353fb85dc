"""A learned lossy image codec: the tokenizer maps an image to a code grid (the lossy step), and the autoregressive
prior's next-code probabilities range-code the grid (lossless, about the prior's cross-entropy in bits).

    data = compress_images(pipe, images, class_labels=labels)   # bytes of a .vqz file
    output = decompress_images(pipe, data)                        # output.images, output.codes, output.class_labels

Labels are side information: with a class-conditional prior, `class_labels` are coded in the stream and each image
is coded with its class's distribution; without them every image is coded unconditionally (the null class).
"""

from .api import (
    CodecOutput,
    compress_codes,
    compress_images,
    decompress_codes,
    decompress_images,
    read_header,
    save_vqz,
)
from .container import FORMAT_VERSION, MAGIC, VQZHeader
from .frequencies import logits_to_frequencies

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CodecOutput",
    "VQZHeader",
    "compress_codes",
    "compress_images",
    "decompress_codes",
    "decompress_images",
    "logits_to_frequencies",
    "read_header",
    "save_vqz",
]
