"""Autoregressive decoding with the per-code step recorded once as a CUDA graph and replayed for every code.

A step of a small prior (8 layers of 256 channels) is ~100 kernel launches and several milliseconds of Python in
transformers' forward; the GPU's share of it is tens of microseconds. With a static KV cache (fixed shapes, writes in
place) the step — the prior's forward over one new token per row, classifier-free guidance, temperature and top-k /
top-p — touches the same memory every time, so it can be recorded once (`torch.cuda.CUDAGraph`) and replayed with one
launch. Sampling itself (`torch.multinomial` with the caller's generator) stays outside the graph, so the codes equal
the eager static-cache sampler's, code for code, with the same generator.

The step never reads a value back to the host (the capture would fail): `tests/test_graphed_decoding.py` counts those
reads on CPU, where the same step runs without a graph.
"""

from collections.abc import Callable

import torch
from transformers import StaticCache
from transformers.generation.logits_process import LogitsProcessorList


class GraphedDecodeStep:
    """The decoding step of `VQAutoregressivePipeline.sample_codes` on static buffers.

    Call `load(next_codes)` with the codes just sampled (it writes them into the input buffer) and `run()` to get the
    probabilities (or, at temperature 0, the argmax codes) of the next code. On CUDA the first `run` warms the step
    up and records it; every later `run` replays it. Off CUDA it runs the same step eagerly (what CPU tests check).
    """

    def __init__(
        self,
        forward: Callable[[torch.LongTensor, StaticCache, torch.LongTensor], torch.Tensor],
        cache: StaticCache,
        attention_mask: torch.LongTensor,
        guided: bool,
        guidance_scale: float,
        temperature: float,
        warpers: LogitsProcessorList,
    ):
        if not isinstance(cache, StaticCache):
            raise TypeError("a graphed decoding step needs a StaticCache (fixed shapes, written in place)")
        self.forward, self.cache, self.attention_mask = forward, cache, attention_mask
        self.guided, self.guidance_scale, self.temperature, self.warpers = guided, guidance_scale, temperature, warpers
        rows = attention_mask.shape[0]
        self.step_input = torch.zeros(rows, 1, dtype=torch.long, device=attention_mask.device)
        self.finite = torch.ones((), dtype=torch.bool, device=attention_mask.device)
        self.use_graph = attention_mask.device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None

    def load(self, next_codes: torch.LongTensor) -> None:
        """Feed the codes just chosen (one per image) as the next input (both halves of a guided batch)."""
        self.step_input.copy_((torch.cat([next_codes, next_codes]) if self.guided else next_codes)[:, None])

    def step(self) -> torch.Tensor:
        """The recorded work: logits of the next code → guidance → warping → probabilities (argmax at temperature 0)."""
        logits = self.forward(self.step_input, self.cache, self.attention_mask)
        self.finite &= torch.isfinite(logits).all()
        if self.guided:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + self.guidance_scale * (conditional - unconditional)
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        return torch.softmax(self.warpers(None, logits / self.temperature).float(), dim=-1)

    def run(self) -> torch.Tensor:
        if not self.use_graph:
            return self.step()
        # Record and replay on the pipeline's GPU, not the current one (`--device cuda:1`): a capture on another
        # device's stream would record none of the prior's kernels.
        with torch.cuda.device(self.step_input.device):
            if self.graph is None:
                self.output = self._record()
            self.graph.replay()
        return self.output

    def _record(self) -> torch.Tensor:
        """Warm the step up on a side stream (cuBLAS and the allocator settle), put back the cache's counters the
        warm-up advanced, then record it. The warm-up's key/value writes land where the first replay writes the same
        values again."""
        counters = cache_counters(self.cache)
        saved = [counter.clone() for counter in counters]
        finite = self.finite.clone()
        device = self.step_input.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self.step()
        torch.cuda.current_stream(device).wait_stream(stream)
        for counter, value in zip(counters, saved):
            counter.copy_(value)
        self.finite.copy_(finite)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(device)):
            output = self.step()
        return output


def cache_counters(cache: StaticCache) -> list[torch.Tensor]:
    """The tensors of a static cache that a step advances besides its keys and values (the write position: its
    `cumulative_length` in transformers 5), found by name so a renamed counter is not missed silently."""
    counters = []
    for layer in getattr(cache, "layers", []):
        for name, value in vars(layer).items():
            if isinstance(value, torch.Tensor) and name not in ("keys", "values") and value.numel() <= 1:
                counters.append(value)
    return counters
