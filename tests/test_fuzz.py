"""Property-based tests: malformed shapes, dtypes, ranges and values thrown at the public API. Every call either
succeeds with a valid result or raises ValueError/TypeError that names one of the arguments given; no other exception,
no NaN output. Examples are derandomized (the same cases every run) and sized so that nothing can hang."""

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_vq_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel,
    autoregressive_prior_config, denoiser_config,
)  # fmt: skip
from vq_hub.cli import main

CODEBOOK, CLASSES, GRID = 16, 3, 4
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip

# ------------------------------------------------------------------------------------------------- strategies

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int64, torch.bool]
SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1.0, 1e30, -1e-30, 255.0]


@st.composite
def tensors(draw, shapes, dtypes=DTYPES, low=-2.0, high=2.0):
    """Tensors of the drawn shape and dtype, filled uniformly with, sometimes, special values sprinkled in."""
    shape = draw(shapes)
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low
    if draw(st.booleans()) and values.numel():
        flat = values.reshape(-1)
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(SPECIAL))
    if dtype == torch.bool:
        return values > 0
    if not dtype.is_floating_point:
        return values.nan_to_num(0, 1e3, -1e3).round().clamp(-(2**31), 2**31).to(dtype)
    return values.to(dtype)


def image_shapes():
    return st.one_of(
        st.tuples(
            st.integers(0, 2), st.sampled_from([1, 3]), st.sampled_from([0, 8, 15, 16]), st.sampled_from([8, 16])
        ),
        st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple),
    )


def code_shapes():
    return st.one_of(st.tuples(st.integers(0, 2), st.sampled_from([4, 8]), st.sampled_from([4, 8])),
                     st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple))  # fmt: skip


def odd_values():
    """Values a user might pass by mistake where a number or a tensor is expected."""
    return st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=3), st.lists(st.integers(-2, 20), max_size=3),
                     st.sampled_from([np.int64(2), np.float32(0.5), torch.tensor(2), object()]))  # fmt: skip


def check_error(error: Exception, names) -> None:
    event(f"{type(error).__name__}: {str(error)[:40]}")
    assert isinstance(error, (ValueError, TypeError)), f"{type(error).__name__}: {error}"
    assert any(name in str(error) for name in names), f"the message names none of {sorted(names)}: {error}"


# ------------------------------------------------------------------------------------------------- the tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> VQVAEModel:
    torch.manual_seed(0)
    return VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK)).eval()


@FUZZ
@given(images=tensors(image_shapes()))
def test_tokenize_and_forward_take_any_tensor(tokenizer, images):
    for call in (tokenizer.tokenize, tokenizer.forward):
        try:
            result = call(images)
        except Exception as error:  # noqa: BLE001 — the property is about which exceptions
            check_error(error, ["images"])
            continue
        codes = result if call == tokenizer.tokenize else result.codes
        assert codes.shape == (images.shape[0], images.shape[2] // 2, images.shape[3] // 2)
        assert int(codes.min()) >= 0 and int(codes.max()) < CODEBOOK
        if call == tokenizer.forward:
            assert torch.isfinite(result.sample).all()


@FUZZ
@given(codes=tensors(code_shapes(), low=-3, high=CODEBOOK + 3))
def test_detokenize_takes_any_tensor(tokenizer, codes):
    try:
        images = tokenizer.detokenize(codes)
    except Exception as error:  # noqa: BLE001
        check_error(error, ["codes"])
        return
    assert images.shape == (codes.shape[0], 3, codes.shape[1] * 2, codes.shape[2] * 2)
    assert torch.isfinite(images).all()


# ------------------------------------------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def pipelines(tokenizer):
    torch.manual_seed(0)
    small = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=8)).eval()
    prior_config = autoregressive_prior_config(small, CLASSES, hidden_size=16, num_layers=1, num_heads=2)
    denoiser = denoiser_config(small, CLASSES, hidden_size=16, num_layers=1, num_heads=2)
    scheduler = DiscreteDiffusionScheduler(20, CODEBOOK, "mask", mask_token_id=denoiser.mask_token_id)
    autoregressive = VQAutoregressivePipeline(small, AutoModelForCausalLM.from_config(prior_config).eval())
    diffusion = VQDiscreteDiffusionPipeline(small, AutoModelForMaskedLM.from_config(denoiser).eval(), scheduler)
    for pipe in (autoregressive, diffusion):
        pipe.set_progress_bar_config(disable=True)
    return autoregressive, diffusion


def int_codes(batch: int, length_or_shape, low: int = 0, high: int = CODEBOOK) -> torch.Tensor:
    shape = (batch, *length_or_shape) if isinstance(length_or_shape, tuple) else (batch, length_or_shape)
    return torch.randint(low, high, shape)


@st.composite
def call_arguments(draw, kind: str) -> dict:
    """Valid arguments for one pipeline call, with zero, one or two of them replaced by a malformed value: each bad
    value is then met on its own, and valid combinations are sampled too."""
    names = ["batch_size", "class_labels", "guidance_scale", "temperature", "generator", "output_type"]
    names += ["top_k", "top_p", "prefix_codes", "num_prefix_rows"] if kind == "ar" else ["num_steps", "codes"]
    corrupted = draw(st.one_of(st.just(()), st.just(()), st.tuples(st.sampled_from(names)),
                               st.tuples(st.sampled_from(names), st.sampled_from(names))))  # fmt: skip
    bad = lambda name: name in corrupted  # noqa: E731
    batch = draw(st.integers(1, 3))
    kwargs = {"batch_size": draw(st.sampled_from([0, -1, True, 2.5, "2"])) if bad("batch_size") else
              draw(st.sampled_from([None, batch]))}  # fmt: skip
    if kwargs["batch_size"] is None:
        batch = 1
    kwargs["class_labels"] = (
        draw(st.sampled_from([3, -2, [0.5] * batch, "cat", [0] * (batch + 1), torch.zeros(batch, 2)]))
        if bad("class_labels") else draw(st.one_of(st.none(), st.integers(-1, 2), st.just(None)))
    )  # fmt: skip
    if kwargs["class_labels"] is None and not bad("class_labels") and draw(st.booleans()):
        kwargs["class_labels"] = draw(st.lists(st.integers(-1, 2), min_size=batch, max_size=batch))
    kwargs["guidance_scale"] = (draw(st.sampled_from([float("nan"), float("inf"), "2", None])) if bad("guidance_scale")
                                else draw(st.one_of(st.floats(0, 5), st.integers(0, 3))))  # fmt: skip
    kwargs["temperature"] = (draw(st.sampled_from([-0.5, float("nan"), float("inf"), "1"])) if bad("temperature")
                             else draw(st.one_of(st.floats(0, 2), st.just(0), st.just(np.float32(1.0)))))  # fmt: skip
    kwargs["generator"] = (
        draw(st.sampled_from([0, "seed", [torch.Generator()] * (batch + 1)])) if bad("generator")
        else draw(st.sampled_from([None, torch.Generator().manual_seed(1), [torch.Generator()] * batch]))
    )  # fmt: skip
    kwargs["output_type"] = (draw(st.sampled_from(["latent", None, "PIL"])) if bad("output_type")
                             else draw(st.sampled_from(["codes", "pt", "np", "pil"])))  # fmt: skip
    if kind == "ar":
        kwargs["top_k"] = (
            draw(st.sampled_from([0, -1, 2.5])) if bad("top_k") else draw(st.one_of(st.none(), st.integers(1, 20)))
        )
        kwargs["top_p"] = (draw(st.sampled_from([0.0, 1.5, float("nan")])) if bad("top_p")
                           else draw(st.one_of(st.none(), st.floats(0.05, 1.0))))  # fmt: skip
        length = draw(st.integers(0, GRID * GRID))
        kwargs["prefix_codes"] = (
            draw(st.sampled_from([int_codes(batch, 3, CODEBOOK, CODEBOOK + 2), int_codes(batch, 3).float(),
                                  int_codes(0, 3), int_codes(batch, GRID * GRID + 1), [[1, 2]]]))
            if bad("prefix_codes") else draw(st.sampled_from([None, int_codes(batch, length),
                                                              int_codes(batch, (1, GRID))]))
        )  # fmt: skip
        kwargs["num_prefix_rows"] = draw(st.sampled_from([1, -1])) if bad("num_prefix_rows") else None
        if kwargs["prefix_codes"] is not None and kwargs["batch_size"] is None and not bad("prefix_codes"):
            kwargs["batch_size"] = None  # the prefix decides the batch
    else:
        kwargs["num_steps"] = (draw(st.sampled_from([0, 21, 2.0, "4", True])) if bad("num_steps")
                               else draw(st.sampled_from([None, 1, 3, np.int64(2), torch.tensor(4)])))  # fmt: skip
        keep = torch.rand(GRID, GRID) < 0.5
        kwargs["codes"], kwargs["keep_mask"] = (
            draw(st.sampled_from([(int_codes(batch, (GRID, GRID), -2, 0), keep), (int_codes(batch, (GRID, GRID)), None),
                                  (int_codes(batch, (GRID, GRID)), keep.float()), (int_codes(batch, (3, 3)), keep)]))
            if bad("codes") else draw(st.sampled_from([(None, None), (int_codes(batch, (GRID, GRID)), keep)]))
        )  # fmt: skip
    return kwargs


def check_pipeline_call(pipe, kwargs: dict) -> None:
    try:
        output = pipe(**kwargs)
    except Exception as error:  # noqa: BLE001
        check_error(error, list(kwargs) + ["batch", "the images or codes given"])
        return
    event("sampled")
    codes = output.codes
    assert codes.shape[1:] == (GRID, GRID) and codes.shape[0] >= 1
    assert int(codes.min()) >= 0 and int(codes.max()) < CODEBOOK
    if kwargs.get("output_type") in ("pt", "np"):
        assert np.isfinite(np.asarray(output.images)).all()


@pytest.mark.slow
@FUZZ
@given(kwargs=call_arguments("ar"))
def test_autoregressive_pipeline_takes_any_arguments(pipelines, kwargs):
    check_pipeline_call(pipelines[0], kwargs)


@pytest.mark.slow
@FUZZ
@given(kwargs=call_arguments("diffusion"))
def test_diffusion_pipeline_takes_any_arguments(pipelines, kwargs):
    check_pipeline_call(pipelines[1], kwargs)


# ------------------------------------------------------------------------------------------------- the scheduler


@st.composite
def scheduler_arguments(draw) -> tuple:
    """`(num_steps, timestep index or a bad timestep, logits, temperature)`, valid unless one is drawn malformed."""
    corrupted = draw(st.sampled_from([None, None, None, "num_steps", "timestep", "logits", "temperature"]))
    num_steps = (draw(st.sampled_from([0, 21, 1.5, True, "3"])) if corrupted == "num_steps"
                 else draw(st.one_of(st.integers(1, 20), st.just(np.int32(5)))))  # fmt: skip
    timestep = draw(st.sampled_from([-1, 7.5, 25, 0])) if corrupted == "timestep" else draw(st.integers(0, 19))
    shape = (
        draw(st.sampled_from([(2, 5, CODEBOOK), (2, 6, 3), (6, CODEBOOK)]))
        if corrupted == "logits"
        else (2, 6, CODEBOOK)
    )
    logits = draw(tensors(st.just(shape), [torch.float32, torch.float16, torch.bfloat16], low=-5, high=5))
    temperature = (draw(st.sampled_from([-1.0, float("nan"), "1"])) if corrupted == "temperature"
                   else draw(st.floats(0, 3)))  # fmt: skip
    return num_steps, timestep, logits, temperature


@FUZZ
@given(arguments=scheduler_arguments())
def test_scheduler_takes_any_arguments(arguments):
    num_steps, timestep, logits, temperature = arguments
    scheduler = DiscreteDiffusionScheduler(20, CODEBOOK, "mask", mask_token_id=CODEBOOK + 1)
    sample = torch.full((2, 6), CODEBOOK + 1)
    try:
        scheduler.set_timesteps(num_steps)
        if isinstance(timestep, int) and 0 <= timestep < len(scheduler.timesteps):
            timestep = scheduler.timesteps[timestep]  # an index into the schedule: a valid timestep
        output = scheduler.step(logits, timestep, sample, temperature=temperature)
    except Exception as error:  # noqa: BLE001
        check_error(error, ["num_steps", "timestep", "model_output", "temperature"])
        return
    event("stepped")
    codes = output.prev_sample
    assert codes.shape == sample.shape
    assert bool(((codes >= 0) & (codes < CODEBOOK) | (codes == CODEBOOK + 1)).all())


# ------------------------------------------------------------------------------------------------- the command line

DIFFUSION = str(ROOT / "checkpoints" / "fashion-mnist-diffusion")
FLAGS = {
    "--num-images": st.one_of(st.integers(-1, 2).map(str), st.sampled_from(["x", "1.5", ""])),
    "--num-steps": st.one_of(st.integers(-1, 3).map(str), st.sampled_from(["200", "two"])),
    "--class": st.one_of(st.integers(-1, 11).map(str), st.just("a")),
    "--guidance-scale": st.sampled_from(["1", "2.5", "nan", "-inf", "x"]),
    "--temperature": st.sampled_from(["0", "1", "-1", "nan", "1e309"]),
    "--top-k": st.sampled_from(["0", "5"]),
    "--seed": st.sampled_from(["0", "-3", "1.5"]),
}


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    flags=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.just(None), max_size=4).flatmap(
        lambda chosen: st.fixed_dictionaries({flag: FLAGS[flag] for flag in chosen})
    )
)
def test_generate_command_takes_any_flags(flags, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("cli") / "grid.png"
    argv = ["generate", "--model", DIFFUSION, "--out", str(out)]
    for flag, value in flags.items():
        argv += [flag, value] if not value.startswith("-") else [f"{flag}={value}"]
    argv += [] if "--num-steps" in flags else ["--num-steps", "1"]
    argv += [] if "--num-images" in flags else ["--num-images", "1"]
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse: a usage error
        code = exit_info.code
    captured = capsys.readouterr()
    event(f"exit code {code}")
    assert code in (0, 1, 2), code
    if code == 0:
        assert out.is_file() and captured.err == ""
    else:
        assert captured.err.count("\n") == 1 and captured.err.startswith("vq-hub generate: error:"), captured.err
        assert not out.exists()


# ------------------------------------------------------------------------------------------------- the .vqz container


@pytest.fixture(scope="module")
def vqz_file(pipelines) -> bytes:
    from vq_hub.codec import compress_codes

    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, CODEBOOK, (5, GRID, GRID), generator=generator)
    return compress_codes(pipelines[0], codes, torch.tensor([0, 1, 2, -1, 0]))


@st.composite
def crafted_files(draw, original: bytes) -> bytes:
    """`original` with header counts, flags and payload bytes rewritten and, mostly, the CRC-32 recomputed: what a
    rewriter who knows the format (and the public weights hash) can send."""
    import struct
    import zlib

    body = bytearray(original[:-4])
    counts = st.one_of(st.integers(0, 8), st.sampled_from([2**31, 2**32 - 1, 10**6, 10**9]), st.integers(0, 2**32 - 1))
    for offset in draw(st.lists(st.sampled_from([48, 52]), max_size=2, unique=True)):  # num_images, batch size
        body[offset : offset + 4] = struct.pack("<I", draw(counts))
    if draw(st.booleans()):
        body[58] = draw(st.integers(0, 3))  # flags: labels coded or not
    start = 86 + body[65]  # the payload, after the arithmetic setting
    payload = bytes(body[start:])
    if draw(st.booleans()):
        payload = draw(st.binary(min_size=0, max_size=24).map(lambda b: b[: len(b) // 4 * 4]))
    for _ in range(draw(st.integers(0, 3))):
        if payload:
            index = draw(st.integers(0, len(payload) * 8 - 1))
            flipped = bytes([payload[index // 8] ^ (1 << index % 8)])
            payload = payload[: index // 8] + flipped + payload[index // 8 + 1 :]
    body = body[:start] + payload
    body[start - 4 : start] = struct.pack("<I", len(payload))
    crc = zlib.crc32(bytes(body)) if draw(st.integers(0, 9)) < 9 else draw(st.integers(0, 2**32 - 1))
    return bytes(body) + struct.pack("<I", crc)


@FUZZ
@given(data=st.data())
def test_crafted_vqz_files_raise_value_error_in_bounded_time_and_memory(pipelines, vqz_file, data):
    """A crafted file either decodes (then to valid grids) or raises one ValueError, within 5 s and without a large
    allocation: counts are bounded by the payload before anything is allocated or the prior runs."""
    import resource
    import time

    from vq_hub.codec import decompress_codes

    crafted = data.draw(crafted_files(vqz_file))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    try:
        output = decompress_codes(pipelines[0], crafted)
        event("decoded")
        assert output.codes.shape[1:] == (GRID, GRID) and int(output.codes.max()) < CODEBOOK
    except ValueError as error:
        event(f"ValueError: {str(error)[:40]}")
    assert time.perf_counter() - start < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 * 1024  # < 256 MiB more at the peak
