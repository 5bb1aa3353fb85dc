import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_vq_config(**overrides) -> dict:
    """A VQModel config small enough for unit tests: 16×16 images → 8×8 codes."""
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        num_vq_embeddings=32,
    )
    config.update(overrides)
    return config
