import pytest
from conftest import tiny_vq_config

from vq_hub import VQVAEModel
from vq_hub.hub import push_to_hub, write_tokenizer_card


class RecordingHfApi:
    """Stands in for `huggingface_hub.HfApi` (no Hub endpoint is reachable in tests) and records the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns=None):
        self.calls.append(("upload_folder", repo_id, folder_path, ignore_patterns))
        return type("CommitInfo", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()


def test_model_card_describes_the_tokenizer(tmp_path):
    VQVAEModel(**tiny_vq_config(sample_size=16)).save_pretrained(tmp_path)
    card = write_tokenizer_card(tmp_path, "me/tiny-vq", training="`accelerate launch ...`",
                                evaluation={"psnr": 21.234, "num_images": 100}).read_text()  # fmt: skip
    assert card.startswith("---\nlibrary_name: vq_hub")
    assert 'VQVAEModel.from_pretrained("me/tiny-vq")' in card and "(1, 8, 8)" in card
    assert "| psnr | 21.23 |" in card and "| num_images | 100 |" in card
    assert "DiffusionPipeline" not in card


def test_push_to_hub_creates_repo_and_uploads_folder(tmp_path):
    VQVAEModel(**tiny_vq_config()).save_pretrained(tmp_path)
    api = RecordingHfApi()
    url = push_to_hub(tmp_path, "me/tiny-vq", private=True, ignore_patterns=["checkpoint-*"], api=api)
    assert api.calls == [
        ("create_repo", "me/tiny-vq", True, True),
        ("upload_folder", "me/tiny-vq", str(tmp_path), ["checkpoint-*"]),
    ]
    assert url.endswith("/commit/1")


def test_push_to_hub_refuses_folder_without_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_to_hub(tmp_path, "me/nothing", api=RecordingHfApi())
