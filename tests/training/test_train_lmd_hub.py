"""train_lmd's Hub side and checkpoints (issue 14 items 2, 3, 4), offline: a projector from a Hub pipeline repository
(hand-built Hub cache, as test_pretrained_loading.py does), the repository created at the start and pushed at
checkpoints (recorded create_repo / upload_folder), and checkpoints that LMDModel.from_pretrained reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_pipeline_components
from PIL import Image
from safetensors.torch import load_file, save_file
from testing_utils import FakeHub, hub_repo, same_weights, step_records, tiny_argv, train

from diffusers_lmd import LMDModel, LMDPipeline
from diffusers_lmd.training import LMDTrainer, list_checkpoints, parse_lmd_args

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def image_folder(root: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_a_hub_pipeline_repos_vae_at_a_revision_with_cache_dir_for_projector_and_data(tmp_path, offline):  # noqa: F811
    cache = tmp_path / "hub"
    parts = tiny_pipeline_components("vq", seed=3)
    LMDPipeline(**parts).save_pretrained(hub_repo(cache, "user/lmd-model", "v1"))  # what --push_to_hub uploads
    argv = tiny_argv("user/lmd-model", tmp_path / "out", tmp_path / "latents", "--revision", "v1", "--cache_dir", cache,
                     "--train_data_dir", image_folder(tmp_path / "images"), "--max_train_steps", 1)  # fmt: skip
    trainer = LMDTrainer(parse_lmd_args(argv))  # no --projector_subfolder: found through model_index.json
    assert same_weights(trainer.vae, parts["vae"])
    assert any(cache.glob("imagefolder/**/*.arrow"))  # --cache_dir is the datasets cache too, as in diffusers

    argv[argv.index("v1")] = "main"  # no such revision in this cache
    with pytest.raises(ValueError, match=r"--projector_path 'user/lmd-model' \(revision 'main'\)"):
        LMDTrainer(parse_lmd_args(argv))


def test_a_projector_with_only_pickled_weights_is_refused_saying_so(tmp_path):
    tiny_pipeline_components("kl")["vae"].save_pretrained(tmp_path / "vae", safe_serialization=False)
    args = parse_lmd_args(tiny_argv(str(tmp_path / "vae"), tmp_path / "out", tmp_path / "latents"))
    with pytest.raises(ValueError, match=r"--projector_path .* holds only pickled weights .*safetensors"):
        LMDTrainer(args)


def test_the_repo_is_created_first_and_every_save_pushes_the_ema_pipeline_at_checkpoints(
    tiny_projector_path, tmp_path, monkeypatch
):
    recorder = FakeHub(monkeypatch, watch=tmp_path / "out")
    train(tiny_projector_path, tmp_path, "--max_train_steps", 3, "--checkpointing_steps", 2, "--use_ema",
          "--push_to_hub", "--hub_model_id", "lmd", "--hub_strategy", "every_save")  # fmt: skip
    assert recorder.created[0] == dict(repo_id="lmd", token=None, private=False, existing=[])  # before any write
    at_checkpoint, final = recorder.uploads
    assert at_checkpoint["background"] and at_checkpoint["message"] == "Training in progress, step 2"
    assert not final["background"] and "train_log.jsonl" in final["files"]
    for upload in (at_checkpoint, final):
        assert {"model_index.json", "README.md", "lmd_pipeline.py", "vae/config.json"} <= upload["files"]
        assert not any(f.startswith(("checkpoint-", ".hub_push")) for f in upload["files"])
    ema_at_2 = LMDModel.from_pretrained(tmp_path / "out" / "checkpoint-2" / "ema").state_dict()
    assert all(torch.equal(at_checkpoint["weights"][k], v) for k, v in ema_at_2.items())  # the EMA weights of step 2
    trained = LMDModel.from_pretrained(tmp_path / "out" / "checkpoint-2" / "transformer").state_dict()
    assert not all(torch.equal(at_checkpoint["weights"][k], v) for k, v in trained.items())
    assert "someone/lmd" in (tmp_path / "out" / "README.md").read_text()  # the card's snippet names the real repo


def test_a_bad_hub_token_fails_before_any_data_or_latents(tiny_projector_path, tmp_path, monkeypatch):
    recorder = FakeHub(monkeypatch, fail_create=ValueError("Invalid user token."), watch=tmp_path / "out")
    with pytest.raises(ValueError, match=r"repository 'lmd' could not be created.*Invalid user token"):
        train(tiny_projector_path, tmp_path, "--max_train_steps", 2, "--push_to_hub", "--hub_model_id", "lmd")
    assert len(recorder.created) == 1 and not recorder.uploads
    assert not (tmp_path / "cache").exists()  # no latents were encoded


def test_checkpoints_hold_a_transformer_that_from_pretrained_loads_and_old_ones_still_resume(
    tiny_projector_path, tmp_path
):
    train(tiny_projector_path, tmp_path, "--max_train_steps", 4, "--checkpointing_steps", 2, name="full")
    out = tmp_path / "full"
    assert [s for s, _ in list_checkpoints(str(out))] == [2, 4]
    checkpoint = out / "checkpoint-4"
    assert not (checkpoint / "model.safetensors").exists()  # the model is stored once, in transformer/
    final = LMDModel.from_pretrained(out / "transformer")
    assert same_weights(LMDModel.from_pretrained(checkpoint / "transformer"), final)

    old = tmp_path / "old"  # a checkpoint as written before the hooks: Accelerate's model.safetensors, no transformer/
    shutil.copytree(out / "checkpoint-2", old / "checkpoint-2")
    weights = load_file(old / "checkpoint-2" / "transformer" / "diffusion_pytorch_model.safetensors")
    save_file(weights, old / "checkpoint-2" / "model.safetensors")
    shutil.rmtree(old / "checkpoint-2" / "transformer")
    resumed, _ = train(tiny_projector_path, tmp_path, "--max_train_steps", 4, "--checkpointing_steps", 2,
                       "--resume_from_checkpoint", "latest", name="old")  # fmt: skip
    assert resumed.global_step == 4 and [r["step"] for r in step_records(old)] == [3, 4]
    for p, q in zip(LMDModel.from_pretrained(old / "transformer").parameters(), final.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
