"""What pins a `.vqz` file to the model and the arithmetic that wrote it: a hash of the weights, the one setting
the prior runs in while coding, and a description of it (named in the error when a decoder's floats still differ)."""

import contextlib
import hashlib

import torch

DTYPE_CODES = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3, torch.float64: 4}
DTYPES_BY_CODE = {code: dtype for dtype, code in DTYPE_CODES.items()}


def model_fingerprint(pipe) -> bytes:
    """SHA-256 (32 bytes) of the tokenizer's and the prior's weights (and a text encoder's, whose empty-prompt states
    the prior codes with): names, dtypes, shapes and raw bytes, in name order. The same weights give the same hash on every machine; any changed weight, or a cast, changes it."""
    digest = hashlib.sha256()
    components = ("vqvae", "text_encoder", "prior") if getattr(pipe, "text_encoder", None) is not None else \
        ("vqvae", "prior")  # fmt: skip
    for component in components:
        state = getattr(pipe, component).state_dict()
        for name in sorted(state):
            tensor = state[name].detach().to("cpu").contiguous()
            digest.update(f"{component}.{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def prior_dtype(pipe) -> torch.dtype:
    dtype = pipe.prior.dtype
    if dtype not in DTYPE_CODES:
        raise ValueError(f"the prior's dtype {dtype} cannot be recorded in a .vqz file (use one of "
                         f"{sorted(str(d) for d in DTYPE_CODES)})")  # fmt: skip
    return dtype


@contextlib.contextmanager
def fixed_arithmetic(pipe):
    """The setting both sides code in: the prior in eval mode (dropout would make the probabilities random) and, on
    a CPU, one torch thread: CPU kernels split their sums by thread count, so a file written with two threads does
    not decode with one (measured on the shipped checkpoint). The caller's settings come back afterwards."""
    was_training, threads = pipe.prior.training, torch.get_num_threads()
    pipe.prior.eval()
    on_cpu = pipe._execution_device.type == "cpu"
    if on_cpu:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        pipe.prior.train(was_training)
        if on_cpu:
            torch.set_num_threads(threads)


def arithmetic_setting(pipe) -> str:
    """Where the prior's floats are computed, in a few words: torch version and device (inside `fixed_arithmetic`
    the CPU thread count is always 1)."""
    device = pipe._execution_device
    if device.type == "cuda":
        return f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}"
    return f"torch {torch.__version__}, {device.type}, 1 thread"
