"""The learned codec (tokenizer + autoregressive prior + range coder) measured: bits per image against the uniform
cost, zlib/LZMA of the code grids and the prior's cross-entropy; encode/decode speed; and rate–distortion (PSNR,
SSIM against bits per pixel) beside JPEG and WebP (Pillow) on the same 32×32 grayscale test images.

    python benchmarks/bench_codec.py --images ../shared/data/fashion_mnist/test.parquet \
        --plot docs/codec_rate_distortion.png

Every method is scored the same way: the original is the 32×32 padded uint8 image the tokenizer sees; the
reconstruction is a uint8 image (the tokenizer's output rounded as a PNG stores it, or the JPEG/WebP decode); PSNR
is averaged per image (range 255), SSIM is Wang et al.'s (11×11 Gaussian window, σ = 1.5, no padding). Bits per
pixel count the 32×32 = 1,024 pixels of the padded image.
"""

import argparse
import io
import lzma
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vq_hub import VQPipeline
from vq_hub.cli._common import read_images
from vq_hub.codec import compress_codes, decompress_codes, read_header
from vq_hub.data import image_to_tensor
from vq_hub.models.priors import next_code_loss

ROOT = Path(__file__).resolve().parents[1]
JPEG_QUALITIES = (5, 10, 20, 30, 50, 75, 90, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 50, 75, 90, 95)
TICKS = (0.25, 0.5, 1, 2, 4, 6)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "fashion-mnist-autoregressive"))
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "fashion_mnist" / "test.parquet"))
    parser.add_argument("--num-images", type=int, help="Only the first N images (default: all).")
    parser.add_argument("--batch-size", type=int, default=512, help="Images per prior batch in the codec.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box).")
    parser.add_argument("--single-files", type=int, default=200, help="Images compressed one per file, to measure "
                        "that use.")  # fmt: skip
    parser.add_argument("--plot", help="Write the rate–distortion figure here (PNG).")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------------- scoring


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """`(N, 1, H, W)` in [-1, 1] → `(N, H, W)` uint8, rounded as `tensor_to_images` (and so a PNG) stores it."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()


def scores(reconstructions: np.ndarray, originals: np.ndarray) -> tuple[float, float]:
    """Mean per-image PSNR (dB, range 255) and mean SSIM of uint8 `(N, H, W)` images."""
    error = (reconstructions.astype(np.float64) - originals.astype(np.float64)) ** 2
    mse = np.maximum(error.reshape(len(error), -1).mean(axis=1), 1e-10)
    psnr = float(np.mean(10 * np.log10(255.0**2 / mse)))
    return psnr, float(ssim(torch.from_numpy(reconstructions), torch.from_numpy(originals)).mean())


def ssim(images: torch.Tensor, reference: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image SSIM of `(N, H, W)` images as Wang et al. (2004) define it and their reference code and
    scikit-image compute it: 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, averaged over the positions
    where the window fits inside the image (no padding). torchmetrics 1.9 pads by reflection and averages every
    position instead; its map, cropped to those positions, equals ours (checked in `main`)."""
    x, y = images.double()[:, None], reference.double()[:, None]
    coordinates = torch.arange(11, dtype=torch.float64) - 5
    window = torch.exp(-(coordinates**2) / (2 * 1.5**2))
    window = window / window.sum()

    def blur(maps: torch.Tensor) -> torch.Tensor:  # separable: two 1-D passes, fast on CPUs
        maps = torch.nn.functional.conv2d(maps, window.view(1, 1, 11, 1))
        return torch.nn.functional.conv2d(maps, window.view(1, 1, 1, 11))

    mean_x, mean_y = blur(x), blur(y)
    var_x = (blur(x * x) - mean_x**2).clamp(min=0)
    var_y = (blur(y * y) - mean_y**2).clamp(min=0)
    covariance = blur(x * y) - mean_x * mean_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1)


def check_ssim_against_torchmetrics(images: np.ndarray, reference: np.ndarray) -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full_map = structural_similarity_index_measure(
        torch.from_numpy(images).double()[:, None], torch.from_numpy(reference).double()[:, None], data_range=255.0,
        kernel_size=11, sigma=1.5, reduction="none", return_full_image=True)  # fmt: skip
    theirs = full_map[..., 5:-5, 5:-5].flatten(1).mean(dim=1)
    ours = ssim(torch.from_numpy(images), torch.from_numpy(reference))
    assert torch.allclose(ours, theirs, atol=1e-9), (ours[:4], theirs[:4])


# ------------------------------------------------------------------------------------------------- JPEG / WebP


def payload_bytes(data: bytes, kind: str) -> int:
    """The entropy-coded part of a file: JPEG's scan data (after the SOS segment, before EOI), WebP's VP8 chunk
    (after the 20 bytes of RIFF and chunk headers). Tables and headers shared by a whole set are not counted."""
    if kind == "JPEG":
        start = data.index(b"\xff\xda")
        return len(data) - (start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")) - 2
    if data[12:16] not in (b"VP8 ", b"VP8L"):
        return len(data)
    return len(data) - 20


def pillow_codec(originals: np.ndarray, kind: str, quality: int) -> dict:
    sizes, payloads, decoded = [], [], []
    start = time.perf_counter()
    for array in originals:
        buffer = io.BytesIO()
        options = {"optimize": True} if kind == "JPEG" else {"method": 6}
        Image.fromarray(array, mode="L").save(buffer, kind, quality=quality, **options)
        data = buffer.getvalue()
        sizes.append(len(data))
        payloads.append(payload_bytes(data, kind))
        with Image.open(io.BytesIO(data)) as image:
            decoded.append(np.asarray(image.convert("L")))
    seconds = time.perf_counter() - start
    return result(kind, f"quality {quality}", 8 * np.mean(sizes), 8 * np.mean(payloads),
                  *scores(np.stack(decoded), originals), len(originals) / seconds)  # fmt: skip


def result(method: str, setting: str, bits: float, payload_bits: float, psnr: float, ssim: float,
           images_per_second: float | None = None) -> dict:  # fmt: skip
    """One row of the rate–distortion table: mean bits per image (whole file, entropy-coded payload only)."""
    return {"method": method, "setting": setting, "bits": bits, "payload_bits": payload_bits, "psnr": psnr,
            "ssim": ssim, "images_per_second": images_per_second}  # fmt: skip


# ------------------------------------------------------------------------------------------------- the codec


def cross_entropy_bits(pipe, codes: torch.LongTensor, labels: torch.LongTensor | None) -> float:
    """Σ −log2 p(code) over all grids, teacher-forced (the figure the README's prior table reports)."""
    total = 0.0
    for start in range(0, len(codes), 1000):
        batch = codes[start : start + 1000].flatten(1)
        batch_labels = None if labels is None else labels[start : start + 1000]
        conditions = pipe.vocabulary.condition_tokens(batch_labels, len(batch))
        tokens = torch.cat([conditions[:, None], batch], dim=1)
        with torch.no_grad():
            total += next_code_loss(pipe.prior(input_ids=tokens).logits, tokens, pipe.vocabulary.codebook_size,
                                    reduction="none").double().sum().item()  # fmt: skip
    return total / math.log(2)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    pipe = VQPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    pil_images, labels = read_images(args.images, None, 0)
    pil_images = pil_images[: args.num_images]
    labels = torch.tensor(labels[: len(pil_images)])
    count = len(pil_images)
    height, width = pipe.resolution
    pixels = height * width
    images = torch.stack([image_to_tensor(image, height, pipe.vqvae.config.in_channels) for image in pil_images])
    originals = to_uint8(images)
    with torch.no_grad():
        codes = torch.cat([pipe.vqvae.tokenize(images[i : i + 500]) for i in range(0, count, 500)])
        reconstructions = torch.cat([pipe.vqvae.detokenize(codes[i : i + 500]) for i in range(0, count, 500)])
    check_ssim_against_torchmetrics(to_uint8(reconstructions[:50]), originals[:50])
    codec_psnr, codec_ssim = scores(to_uint8(reconstructions), originals)
    codebook = pipe.vocabulary.codebook_size
    num_codes = codes[0].numel()
    print(f"{count} images of {height}×{width}, {num_codes} codes each, K = {codebook}; torch {torch.__version__}, "
          f"{args.threads} thread(s), prior batch {args.batch_size}", flush=True)  # fmt: skip

    data, encode_seconds = timed(compress_codes, pipe, codes, labels, batch_size=args.batch_size, progress=True)
    decoded, decode_seconds = timed(decompress_codes, pipe, data, progress=True)
    assert torch.equal(decoded.codes, codes) and torch.equal(decoded.class_labels, labels), "round trip failed"
    unconditional = compress_codes(pipe, codes, None, batch_size=args.batch_size, progress=True)
    header_bytes = 86 + len(read_header(data).arithmetic_setting) + 4
    # One image per file: a header each, and the coder's last word(s) each (measured on images spread over the
    # split, which is sorted by class).
    step = max(1, count // args.single_files)
    single = list(zip(codes[::step][: args.single_files], labels[::step][: args.single_files]))
    single_file_bits = 8 * np.mean([len(compress_codes(pipe, grid[None], label[None], batch_size=1))
                                    for grid, label in single])  # fmt: skip

    raw = codes.numpy().astype(np.uint8 if codebook <= 256 else np.uint16).tobytes()
    conditional_ce = cross_entropy_bits(pipe, codes, labels) + count * math.log2(pipe.vocabulary.num_classes + 1)
    unconditional_ce = cross_entropy_bits(pipe, codes, None)
    zlib_bits = 8 * len(zlib.compress(raw, 9))
    lzma_bits = 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    rates = [  # name, bits of the whole file, bits of its payload, the cross-entropy it is compared with
        ("uniform: h·w·log2 K", count * num_codes * math.log2(codebook), None, None),
        ("zlib -9 of the code grids (one byte a code, all images in one stream)", zlib_bits, None, None),
        ("LZMA (preset 9e) of the code grids", lzma_bits, None, None),
        ("prior cross-entropy, unconditional", unconditional_ce, None, None),
        (".vqz, unconditional", 8 * len(unconditional), 8 * (len(unconditional) - header_bytes), unconditional_ce),
        ("prior cross-entropy given the label, + the label (log2 11 bits)", conditional_ce, None, None),
        (".vqz, labels coded", 8 * len(data), 8 * (len(data) - header_bytes), conditional_ce),
    ]
    print(f"\n### Bits ({count:,} test images in one file; the .vqz header is {header_bytes} bytes)\n")
    print("| method | bits per image | bits per pixel | payload vs cross-entropy |\n|---|---:|---:|---:|")
    for name, bits, payload, reference in rates:
        versus = f"{(payload / reference - 1) * 100:+.3f}%" if reference else ""
        print(f"| {name} | {bits / count:.2f} | {bits / count / pixels:.4f} | {versus} |")
    print(f"| .vqz, one image per file ({len(single)} images, one in {step}) | {single_file_bits:.1f} | "
          f"{single_file_bits / pixels:.4f} | |")  # fmt: skip
    print(f"\nSpeed: encode {count / encode_seconds:.1f} images/s, decode {count / decode_seconds:.1f} images/s "
          f"(codes only; batch {args.batch_size}, {args.threads} thread(s))", flush=True)  # fmt: skip

    distortion = (codec_psnr, codec_ssim)
    rows = [result("vq_hub codec", "labels coded", 8 * len(data) / count, 8 * (len(data) - header_bytes) / count,
                   *distortion, count / decode_seconds),
            result("vq_hub codec", "unconditional", 8 * len(unconditional) / count,
                   8 * (len(unconditional) - header_bytes) / count, *distortion),
            result("vq_hub codec", "one image per file", single_file_bits, single_file_bits - 8 * header_bytes,
                   *distortion),
            result("code grids + LZMA", "", lzma_bits / count, lzma_bits / count, *distortion)]  # fmt: skip
    for kind, qualities in (("JPEG", JPEG_QUALITIES), ("WebP", WEBP_QUALITIES)):
        for quality in qualities:
            rows.append(pillow_codec(originals, kind, quality))
    print("\n### Rate–distortion (bits per pixel of the whole file, and of the entropy-coded payload only)\n")
    print("| method | setting | bits per image | bpp (file) | bpp (payload) | PSNR (dB) | SSIM |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['setting']} | {row['bits']:.0f} | {row['bits'] / pixels:.3f} | "
              f"{row['payload_bits'] / pixels:.3f} | {row['psnr']:.2f} | {row['ssim']:.3f} |")  # fmt: skip
    jpeg_speed = next(row for row in rows if row["setting"] == "quality 75" and row["method"] == "JPEG")
    webp_speed = next(row for row in rows if row["setting"] == "quality 75" and row["method"] == "WebP")
    print(f"\nPillow, quality 75, encode + decode: JPEG {jpeg_speed['images_per_second']:.0f} images/s, WebP "
          f"{webp_speed['images_per_second']:.0f} images/s")  # fmt: skip
    if args.plot:
        plot(rows, pixels, args.plot, count)


def plot(rows: list[dict], pixels: int, path: str, count: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vq_hub.utils.io import atomic_file

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for kind, colour in (("JPEG", "tab:orange"), ("WebP", "tab:green")):
            points = [row for row in rows if row["method"] == kind]
            axis.plot([r["bits"] / pixels for r in points], [r[metric] for r in points], "o-", color=colour,
                      label=f"{kind} (whole file)")  # fmt: skip
            axis.plot([r["payload_bits"] / pixels for r in points], [r[metric] for r in points], "o--",
                      color=colour, alpha=0.6, label=f"{kind} (entropy-coded data only)")  # fmt: skip
        markers = (("labels coded", "*", 16), ("unconditional", "P", 11), ("one image per file", "X", 10))
        for setting, marker, size in markers:
            row = next(r for r in rows if r["method"] == "vq_hub codec" and r["setting"] == setting)
            axis.plot(row["bits"] / pixels, row[metric], marker, color="tab:blue", markersize=size,
                      label=f"vq_hub codec, {setting}")  # fmt: skip
        lzma_row = next(r for r in rows if r["method"] == "code grids + LZMA")
        axis.plot(lzma_row["bits"] / pixels, lzma_row[metric], "s", color="tab:gray", label="code grids + LZMA")
        axis.set_xscale("log")
        axis.set_xticks(TICKS, [f"{tick:g}" for tick in TICKS])
        axis.minorticks_off()
        axis.set_xlabel("bits per pixel (32×32 padded grayscale)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7.5, loc="upper left")
    figure.suptitle(f"Fashion-MNIST test split ({count:,} images): learned codec vs JPEG and WebP (Pillow)")
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=120)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
