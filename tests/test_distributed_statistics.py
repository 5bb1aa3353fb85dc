"""Two processes quantizing half a batch each must see the statistics of the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vq_hub.quantizers import VectorQuantizer


def _make_quantizer() -> VectorQuantizer:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(32, 4, use_ema=True, decay=0.5, dead_code_threshold=0.4).train()
    quantizer.embedding.weight.data.normal_()
    quantizer.ema_embed_sum.copy_(quantizer.embedding.weight.data)
    return quantizer


def _full_batch() -> torch.Tensor:
    return torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        quantizer = _make_quantizer()
        torch.manual_seed(100 + rank)  # ranks draw different restart candidates; rank 0's must win
        shard = _full_batch().chunk(world_size)[rank]
        results = []
        for _ in range(3):
            output = quantizer(shard)
            results.append((output.perplexity, output.codebook_usage))
        kmeans_quantizer = VectorQuantizer(8, 4, kmeans_init=True).train()
        kmeans_quantizer(shard)
        torch.save(
            {"stats": results, "state": quantizer.state_dict(), "kmeans_state": kmeans_quantizer.state_dict()},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_single_process_statistics(tmp_path):
    world_size = 2
    mp.spawn(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]

    reference = _make_quantizer()
    first = reference(_full_batch())
    # The first step's statistics and EMA update come from the whole batch, on every rank.
    for rank in ranks:
        torch.testing.assert_close(rank["stats"][0][0], first.perplexity)
        torch.testing.assert_close(rank["stats"][0][1], first.codebook_usage)
    # After three steps (with dead-code restarts) both ranks still hold one identical codebook.
    assert int(ranks[0]["state"]["num_restarts"]) > 0
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    # k-means initialisation runs on rank 0 and is broadcast: one codebook everywhere.
    assert bool(ranks[0]["kmeans_state"]["initialized"])
    assert torch.equal(ranks[0]["kmeans_state"]["embedding.weight"], ranks[1]["kmeans_state"]["embedding.weight"])
