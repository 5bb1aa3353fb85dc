"""The codec: integer frequencies, exact round trips (random, adversarial), the .vqz checks, size = cross-entropy, CLI."""

import json
import math
import struct
import zlib

import constriction
import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_vq_config
from PIL import Image
from transformers import AutoModelForCausalLM

from vq_hub import VQAutoregressivePipeline, VQPipeline, VQVAEModel, autoregressive_prior_config
from vq_hub.cli import main
from vq_hub.cli._common import read_images
from vq_hub.codec import (
    coder,
    compress_codes,
    compress_images,
    decompress_codes,
    decompress_images,
    logits_to_frequencies,
    read_header,
)
from vq_hub.data import shipped_fashion_mnist, tensor_to_images
from vq_hub.models.priors import next_code_loss

CODEBOOK, CLASSES, GRID = 16, 3, (4, 4)
AUTOREGRESSIVE = str(ROOT / "checkpoints" / "fashion-mnist-autoregressive")
FILE_ERRORS = r"not a \.vqz file|truncated|damaged|format version"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The priors here are tiny: one thread is fastest, and two busy-wait for each other on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_pipeline(seed: int = 0, num_classes: int = CLASSES) -> VQAutoregressivePipeline:
    """8×8 images → 4×4 grids of 16 codes; a 2-layer GPT prior with random weights."""
    torch.manual_seed(seed)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=8)).eval()
    config = autoregressive_prior_config(vqvae, num_classes, hidden_size=32, num_layers=2, num_heads=2)
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=AutoModelForCausalLM.from_config(config).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> VQAutoregressivePipeline:
    return tiny_pipeline()


def random_grids(count: int, seed: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, CODEBOOK, (count, *GRID), generator=generator)
    return codes, torch.randint(-1, CLASSES, (count,), generator=generator)


def coded_frequencies(pipe, codes: torch.LongTensor, labels, batch_size: int) -> np.ndarray:
    """The frequency (out of 2^24) the coder gives each code of `codes`, through the coder's own stepping."""
    conditions = pipe.vocabulary.condition_tokens(labels, len(codes))
    found = []
    for start in range(0, len(codes), batch_size):
        batch = codes[start : start + batch_size].flatten(1)
        rows = torch.arange(len(batch))

        def record(position, frequencies, batch=batch, rows=rows):
            found.append(frequencies[rows, batch[:, position]])
            return batch[:, position]

        coder._run_prior(pipe, conditions[start : start + batch_size], batch.shape[1], record, 24, 1)
    return np.concatenate(found)


def payload_bits(data: bytes) -> int:
    header = read_header(data)
    return 8 * (len(data) - (86 + len(header.arithmetic_setting)) - 4)


# ------------------------------------------------------------------------------------------------- frequencies


def test_frequencies_sum_to_the_coder_total_keep_a_minimum_and_follow_the_softmax():
    logits = torch.randn(300, 256, generator=torch.Generator().manual_seed(0)) * 4
    logits[0] = -1e4
    logits[0, 3] = 80.0  # one certain code: every other code keeps the minimum
    logits[1] = 0.0  # uniform
    frequencies = logits_to_frequencies(logits)
    assert frequencies.dtype == np.int64 and (frequencies.sum(axis=1) == 2**24).all()
    assert frequencies.min() == 1 and (frequencies[0] == 1).sum() == 255 and frequencies[0, 3] == 2**24 - 255
    assert set(frequencies[1].tolist()) == {2**16}
    softmax = torch.softmax(logits.double(), dim=1).numpy()
    assert np.abs(frequencies / 2**24 - softmax).max() < 256 / 2**24
    assert np.array_equal(logits_to_frequencies(logits.numpy()), frequencies)  # numpy in, same integers
    assert (logits_to_frequencies(logits, min_frequency=64) >= 64).all()
    with pytest.raises(ValueError, match="NaN"):
        logits_to_frequencies(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="min_frequency"):
        logits_to_frequencies(logits, min_frequency=2**16 + 1)


def test_the_range_coder_uses_exactly_our_integer_frequencies():
    frequencies = logits_to_frequencies(torch.tensor([[0.0, 30.0, -30.0, 2.0]]))
    assert frequencies[0, 2] == 1
    encoder = constriction.stream.queue.RangeEncoder()
    for _ in range(1000):  # the least likely code: exactly 24 bits each if the coder's model is ours
        encoder.encode(np.array([2], dtype=np.int32), coder._CATEGORICAL, coder._model_parameters(frequencies))
    assert 24_000 <= encoder.num_bits() <= 24_000 + 64


# ------------------------------------------------------------------------------------------------- round trips


def test_thousands_of_random_grids_round_trip_exactly(pipe):
    codes, labels = random_grids(3000, seed=1)
    data = compress_codes(pipe, codes, labels, batch_size=256)  # 12 batches, the last one of 184
    output = decompress_codes(pipe, data)
    assert torch.equal(output.codes, codes) and torch.equal(output.class_labels, labels)
    header = read_header(data)
    assert (header.num_images, header.batch_size, header.labels_coded, header.grid_size) == (3000, 256, True, GRID)

    unconditional = compress_codes(pipe, codes[:1000], batch_size=99)  # no labels: null class, nothing stored
    output = decompress_codes(pipe, unconditional)
    assert torch.equal(output.codes, codes[:1000]) and output.class_labels is None
    assert not read_header(unconditional).labels_coded


def test_coding_runs_in_one_fixed_setting_and_gives_the_callers_back(pipe):
    codes, labels = random_grids(8, seed=7)
    torch.set_num_threads(2)
    pipe.prior.train()  # dropout on: the coder must switch it off, or the two sides' probabilities would differ
    try:
        data = compress_codes(pipe, codes, labels)
        assert torch.get_num_threads() == 2 and pipe.prior.training
    finally:
        torch.set_num_threads(1)
        pipe.prior.eval()
    assert read_header(data).arithmetic_setting == f"torch {torch.__version__}, cpu, 1 thread"
    assert torch.equal(decompress_codes(pipe, data).codes, codes)


def test_adversarial_codes_on_a_confident_prior_round_trip_at_24_bits_each():
    pipe = tiny_pipeline(seed=3)
    with torch.no_grad():
        pipe.prior.transformer.ln_f.weight.mul_(300.0)  # logits ×300: nearly certain of one code every time
    labels = torch.arange(1000) % (CLASSES + 1) - 1
    conditions = pipe.vocabulary.condition_tokens(labels, 1000)
    picked = []

    def least_likely(position, frequencies):  # the grid the prior finds least likely, code by code
        codes = torch.from_numpy(frequencies.argmin(axis=1))
        picked.append(frequencies[np.arange(len(codes)), codes.numpy()])
        return codes

    adversarial = coder._run_prior(pipe, conditions, 16, least_likely, 24, 1).reshape(1000, *GRID)
    assert (np.concatenate(picked) == 1).mean() > 0.9  # mostly codes at the minimum frequency
    random_codes, _ = random_grids(1000, seed=4)
    codes = torch.cat([adversarial, random_codes])
    data = compress_codes(pipe, codes, torch.cat([labels, labels]), batch_size=500)
    assert torch.equal(decompress_codes(pipe, data).codes, codes)
    ideal = -np.log2(coded_frequencies(pipe, codes, torch.cat([labels, labels]), 500) / 2**24).sum()
    bits = payload_bits(data) - 2000 * math.log2(CLASSES + 1)
    assert ideal / 32_000 > 22  # the 2,000 grids of 16 codes cost close to 24 bits a code
    assert abs(bits - ideal) < 64 + 2  # and the file holds exactly that, plus the coder's last word(s)


def test_images_round_trip_to_the_tokenizers_reconstructions(pipe):
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    data = compress_images(pipe, images, class_labels=2)
    output = decompress_images(pipe, data, output_type="pt")
    assert torch.equal(output.codes, pipe.encode_images(images)) and output.class_labels.tolist() == [2] * 5
    assert torch.equal(output.images, pipe.decode_codes(output.codes, "pt"))
    pil = decompress_images(pipe, data).images
    assert len(pil) == 5 and pil[0].size == (8, 8)


def test_bad_inputs_are_refused_with_clear_errors(pipe):
    codes, _ = random_grids(4, seed=5)
    with pytest.raises(ValueError, match=r"\(N, 4, 4\)"):
        compress_codes(pipe, codes[:, :3])
    with pytest.raises(ValueError, match="must lie in"):
        compress_codes(pipe, codes + CODEBOOK)
    with pytest.raises(ValueError, match="class_labels"):
        compress_codes(pipe, codes, [0, 1])
    with pytest.raises(ValueError, match="unconditional"):
        compress_codes(tiny_pipeline(num_classes=0), codes, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="between 1 and"):
        compress_codes(pipe, codes[:0])
    with pytest.raises(ValueError, match="batch_size"):
        compress_codes(pipe, codes, batch_size=0)
    with pytest.raises(TypeError, match="VQAutoregressivePipeline"):
        compress_codes(object(), codes)


# ------------------------------------------------------------------------------------------------- the .vqz checks


@pytest.fixture(scope="module")
def small_file(pipe) -> tuple[bytes, torch.LongTensor]:
    codes, labels = random_grids(2, seed=6)
    return compress_codes(pipe, codes, labels), codes


def test_every_flipped_bit_and_every_truncation_is_a_clear_error(pipe, small_file):
    data, codes = small_file
    assert torch.equal(decompress_codes(pipe, data).codes, codes)
    for index in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[index // 8] ^= 1 << (index % 8)
        with pytest.raises(ValueError, match=FILE_ERRORS):
            decompress_codes(pipe, bytes(damaged))
    for length in range(len(data)):
        with pytest.raises(ValueError, match=FILE_ERRORS):
            decompress_codes(pipe, data[:length])
    with pytest.raises(ValueError, match="damaged"):
        decompress_codes(pipe, data + b"\0")
    with pytest.raises(ValueError, match="not a .vqz file"):
        decompress_codes(pipe, b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(TypeError, match="bytes"):
        decompress_codes(pipe, "a.vqz")


def rewritten(data: bytes, offset: int, value: bytes) -> bytes:
    """`data` with `value` at `offset` and a fresh CRC: a well-formed file that says something else."""
    body = bytearray(data[:-4])
    body[offset : offset + len(value)] = value
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def test_files_of_another_model_version_or_dtype_are_refused(pipe, small_file):
    data, _ = small_file
    with pytest.raises(ValueError, match="another model"):
        decompress_codes(tiny_pipeline(seed=1), data)
    with pytest.raises(ValueError, match="format version 3"):
        decompress_codes(pipe, rewritten(data, 4, struct.pack("<H", 3)))
    with pytest.raises(ValueError, match="do not fit"):
        decompress_codes(pipe, rewritten(data, 44, struct.pack("<I", 8)))  # a codebook of 8, same hash
    other_dtype = tiny_pipeline()
    other_dtype.prior.to(torch.float64)
    with pytest.raises(ValueError, match="load it in torch.float32"):
        decompress_codes(other_dtype, data)


def test_a_decoder_whose_floats_differ_fails_loudly(pipe, small_file, monkeypatch):
    data, _ = small_file
    original = VQAutoregressivePipeline.next_code_logits

    def slightly_different(self, *args):
        logits = original(self, *args)
        return logits + 1e-3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(VQAutoregressivePipeline, "next_code_logits", slightly_different)
    # The same arithmetic setting: the likelier cause is a re-checksummed payload, but the floats may still differ.
    with pytest.raises(ValueError, match="damaged or crafted .* rounds the prior's floats differently .*torch"):
        decompress_codes(pipe, data)
    monkeypatch.setattr("vq_hub.codec.api.arithmetic_setting", lambda pipe: "torch 0.0, cpu, 7 threads")
    with pytest.raises(ValueError, match="floats here differ from the encoder's .*torch 0.0, cpu, 7 threads"):
        decompress_codes(pipe, data)


def setting_length(data: bytes) -> int:
    return len(read_header(data).arithmetic_setting)


@pytest.mark.parametrize(
    "field, offset, value",
    [
        ("num_images", 48, 2**32 - 1),  # once a memory allocation failure that aborted the process
        ("num_images", 48, 10**6),  # with batch size 1: once 14,611 prior steps, then constriction's AssertionError
        ("batch_size", 52, 2**32 - 1),
        ("batch_size", 52, 0),
    ],
)
def test_crafted_counts_are_refused_before_anything_is_allocated_or_run(pipe, small_file, field, offset, value):
    """The CRC-32 is no MAC: a rewritten count passes it, and must be bounded by what the payload can hold."""
    data, _ = small_file
    crafted = rewritten(data, offset, struct.pack("<I", value))
    if field == "num_images":
        crafted = rewritten(crafted, 52, struct.pack("<I", 1))  # batch size 1: the most prior runs per image
    calls = []
    original = VQAutoregressivePipeline.next_code_logits
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VQAutoregressivePipeline, "next_code_logits",
                      lambda self, *a: calls.append(1) or original(self, *a))  # fmt: skip
        with pytest.raises(ValueError, match="damaged or crafted|do not fit"):
            decompress_codes(pipe, crafted)
    assert not calls  # refused from the header alone


def test_a_rechecksummed_payload_bit_flip_is_reported_as_damage_not_only_floats(pipe):
    codes, labels = random_grids(40, seed=8)
    data = compress_codes(pipe, codes, labels)
    start = 86 + setting_length(data)
    for index in (0, 37, 8 * (len(data) - start - 4) - 1):  # first, a middle and the last payload bit
        body = bytearray(data[:-4])
        body[start + index // 8] ^= 1 << (index % 8)
        with pytest.raises(ValueError, match="damaged or crafted"):
            decompress_codes(pipe, bytes(body) + struct.pack("<I", zlib.crc32(body)))


def test_the_payload_bound_holds_for_real_streams_at_the_extremes():
    """`check_counts` and the running check refuse only what no legitimate stream can be: a prior certain of code 0
    (24 − log2(2^24 − 15) bits a code, the coder's floor) still decodes many images from its few words."""
    certain = tiny_pipeline()
    with torch.no_grad():
        certain.prior.lm_head.weight.zero_()
        certain.prior.transformer.ln_f.bias.fill_(1.0)
        certain.prior.lm_head.weight[0].fill_(1e4)  # logit of code 0 far above the rest: frequency 2^24 − 15
    codes = torch.zeros(3000, *GRID, dtype=torch.long)
    data = compress_codes(certain, codes, batch_size=1000)
    header = read_header(data)
    num_words = payload_bits(data) // 32
    least = header.num_images * 16 * coder.min_code_bits(CODEBOOK, 24, 1)
    assert least <= coder.capacity_bits(num_words)  # the bound admits it, and the running check too:
    assert torch.equal(decompress_codes(certain, data).codes, codes)
    too_many = int(coder.capacity_bits(num_words) / (16 * coder.min_code_bits(CODEBOOK, 24, 1))) + 1
    with pytest.raises(ValueError, match="damaged or crafted: its header says"):
        decompress_codes(certain, rewritten(data, 48, struct.pack("<I", too_many)))


# ------------------------------------------------------------------------------------------------- size and the CLI


@pytest.fixture(scope="module")
def shipped():
    pipe = VQPipeline.from_pretrained(AUTOREGRESSIVE)
    pipe.set_progress_bar_config(disable=True)
    images, labels = read_images(str(shipped_fashion_mnist()), 48, seed=0)
    with torch.no_grad():
        codes = pipe.encode_images(images)
    return pipe, codes, torch.tensor(labels)


def test_file_size_is_the_priors_cross_entropy_on_the_shipped_checkpoint(shipped):
    pipe, codes, labels = shipped
    data = compress_codes(pipe, codes, labels, batch_size=48)
    tokens = torch.cat([pipe.vocabulary.condition_tokens(labels, len(codes))[:, None], codes.flatten(1)], dim=1)
    with torch.no_grad():  # teacher-forced, in one pass: the cross-entropy the README reports
        cross_entropy = next_code_loss(pipe.prior(input_ids=tokens).logits, tokens, 256, "none").sum().item()
    cross_entropy_bits = cross_entropy / math.log(2) + len(codes) * math.log2(11)  # + the labels, uniform over 11
    assert 2.5 * 64 * 48 < cross_entropy_bits < 5 * 64 * 48  # a trained prior: far below 8 bits per code
    assert abs(payload_bits(data) - cross_entropy_bits) < 0.01 * cross_entropy_bits
    assert len(data) - payload_bits(data) // 8 == 86 + len(read_header(data).arithmetic_setting) + 4  # the header


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_compress_then_decompress_reproduces_the_tokenizers_images(capsys, tmp_path, shipped):
    pipe = shipped[0]
    source = str(shipped_fashion_mnist())
    vqz = tmp_path / "mini.vqz"
    code, out, _ = run_cli(capsys, "compress", source, "--model", AUTOREGRESSIVE, "--out", str(vqz),
                           "--num-images", "6", "--batch-size", "4")  # fmt: skip
    assert code == 0 and "6 images coded with their labels" in out and "bits per pixel" in out
    images, labels = read_images(source, 6, seed=0)
    codes = pipe.encode_images(images)

    code, out, _ = run_cli(capsys, "decompress", str(vqz), "--model", AUTOREGRESSIVE, "--out", str(tmp_path / "c.npy"))
    assert code == 0 and np.array_equal(np.load(tmp_path / "c.npy"), codes.numpy())
    code, out, _ = run_cli(capsys, "decompress", str(vqz), "--model", AUTOREGRESSIVE, "--out", str(tmp_path / "dec"))
    assert code == 0 and "6 PNG images" in out
    expected = tensor_to_images(pipe.vqvae.detokenize(codes).clamp(-1, 1))
    for index, image in enumerate(expected):
        with Image.open(tmp_path / "dec" / f"{index:05d}.png") as written:
            assert np.array_equal(np.asarray(written), np.asarray(image))
    assert json.loads((tmp_path / "dec" / "labels.json").read_text()) == labels
    code, out, _ = run_cli(capsys, "decompress", str(vqz), "--model", AUTOREGRESSIVE, "--out", str(tmp_path / "g.png"))
    assert code == 0 and (tmp_path / "g.png").is_file()

    (tmp_path / "cut.vqz").write_bytes(vqz.read_bytes()[:-9])
    code, _, err = run_cli(capsys, "decompress", str(tmp_path / "cut.vqz"), "--model", AUTOREGRESSIVE, "--out",
                           str(tmp_path / "x"))  # fmt: skip
    assert code == 1 and "truncated" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    diffusion = str(ROOT / "checkpoints" / "fashion-mnist-diffusion")
    code, _, err = run_cli(capsys, "decompress", str(vqz), "--model", diffusion, "--out", str(tmp_path / "x"))
    assert code == 1 and "autoregressive" in err
    code, _, err = run_cli(capsys, "compress", source, "--model", AUTOREGRESSIVE, "--out", str(tmp_path / "a.zip"))
    assert code == 1 and ".vqz" in err
