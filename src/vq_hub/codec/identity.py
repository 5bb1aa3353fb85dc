"""What pins a `.vqz` file to the model and the arithmetic that wrote it: a hash of the weights, and a description
of the setting the prior ran in (named in the error when a decoder's floats turn out to differ)."""

import hashlib

import torch

DTYPE_CODES = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3, torch.float64: 4}
DTYPES_BY_CODE = {code: dtype for dtype, code in DTYPE_CODES.items()}


def model_fingerprint(pipe) -> bytes:
    """SHA-256 (32 bytes) of the tokenizer's and the prior's weights: names, dtypes, shapes and raw bytes, in name
    order. The same weights give the same hash on every machine; any changed weight, or a cast, changes it."""
    digest = hashlib.sha256()
    for component in ("vqvae", "prior"):
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


def arithmetic_setting(pipe) -> str:
    """A short description of where the prior's floats were computed: torch version, device and CPU threads."""
    device = pipe._execution_device
    return f"torch {torch.__version__}, {device.type}, {torch.get_num_threads()} threads"
