"""LMD training end to end: the script, the loss, the schedule, checkpoints, resume, faults and the Hub upload."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import VQModel
from huggingface_hub.utils import filter_repo_objects
from PIL import Image
from safetensors.torch import load_file
from testing_utils import step_records, tiny_argv, train

from diffusers_lmd import LMDMaskScheduler, LMDModel, LMDPipeline
from diffusers_lmd.data import UnreadableImageWarning, build_datasets
from diffusers_lmd.projector import estimate_latent_stats
from diffusers_lmd.training import NonFiniteLossError, list_checkpoints, resolve_resume_path, train_lmd
from diffusers_lmd.training.args import data_config, parse_lmd_args

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "training" / "train_lmd.py")
BIN = Path(sys.executable).parent


pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def schedule_of(args, total):
    return LMDMaskScheduler(args.mask_schedule, args.mask_ratio_min, args.mask_ratio_max, total)


@pytest.mark.slow
def test_train_lmd_script_through_accelerate_launch(tiny_projector_path, tmp_path):
    out = tmp_path / "run"
    argv = tiny_argv(tiny_projector_path, out, tmp_path / "cache", "--max_train_steps", 6, "--checkpointing_steps", 2,
                     "--checkpoints_total_limit", 2, "--random_flip", "--mask_schedule", "piecewise")  # fmt: skip
    launch = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
              SCRIPT]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out PSNR:" in done.stdout
    for name in (
        "model_index.json",
        "README.md",
        "loss_curve.png",
        "mask_schedule.png",
        "train_log.jsonl",
        "reconstructions.png",
        "lmd_pipeline.py",
    ):
        assert (out / name).is_file(), name  # fmt: skip
    assert [s for s, _ in list_checkpoints(str(out))] == [4, 6]  # pruned to the newest two
    records = step_records(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    schedule = LMDMaskScheduler("piecewise", 0.15, 0.75, 6)
    assert [r["mask_ratio"] for r in records] == [schedule.get_mask_ratio(s - 1) for s in range(1, 7)]
    assert all(set(r) >= {"step", "loss", "mask_ratio", "lr", "time"} for r in records)
    pipe = LMDPipeline.from_pretrained(out)
    assert isinstance(pipe.transformer, LMDModel) and pipe.transformer.config.sample_size == 8
    image = Image.fromarray(np.full((16, 16, 3), 128, np.uint8))
    assert pipe(image=image, mask_ratio=0.75, output_type="np").images.shape == (1, 16, 16, 3)


def test_loss_falls_and_mask_ratios_follow_the_schedule(tiny_projector_path, tmp_path):
    result, args = train(tiny_projector_path, tmp_path, "--max_train_steps", 24, "--gradient_accumulation_steps", 2,
                         "--train_batch_size", 4, "--checkpointing_steps", 1000)  # fmt: skip
    records = step_records(args.output_dir)
    assert result.global_step == 24 and [r["step"] for r in records] == list(range(1, 25))
    schedule = schedule_of(args, 24)
    assert [r["mask_ratio"] for r in records] == [schedule.get_mask_ratio(s) for s in range(24)]
    assert records[0]["mask_ratio"] == 0.15 and records[-1]["mask_ratio"] == 0.75
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses
    assert np.isfinite(result.eval.psnr)


def test_interrupted_run_resumed_from_latest_matches_an_uninterrupted_one(tiny_projector_path, tmp_path, monkeypatch):
    common = ("--max_train_steps", 8, "--checkpointing_steps", 3, "--use_ema", "--random_flip")
    full, _ = train(tiny_projector_path, tmp_path, *common, name="full")

    from diffusers_lmd.training import logging as train_logging

    original_log = train_logging.JsonlLogger.log

    def killed_after_step_5(self, record):
        original_log(self, record)
        if record.get("step") == 5 and "loss" in record:
            raise KeyboardInterrupt  # the process dies after step 5, two steps past checkpoint-3

    monkeypatch.setattr(train_logging.JsonlLogger, "log", killed_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_projector_path, tmp_path, *common, name="split")
    monkeypatch.setattr(train_logging.JsonlLogger, "log", original_log)
    assert resolve_resume_path(str(tmp_path / "split"), "latest").endswith("checkpoint-3")
    resumed, _ = train(tiny_projector_path, tmp_path, *common, "--resume_from_checkpoint", "latest", name="split")

    assert resumed.global_step == full.global_step == 8
    a, b = step_records(tmp_path / "full"), step_records(tmp_path / "split")
    assert [r["step"] for r in b] == list(range(1, 9))  # the lines logged after checkpoint-3 were replaced
    assert [r["mask_ratio"] for r in a] == [r["mask_ratio"] for r in b]
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b])
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)
    saved = [LMDModel.from_pretrained(tmp_path / name / "transformer") for name in ("full", "split")]
    for p, q in zip(saved[0].parameters(), saved[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_two_processes_share_the_mask_ratio_and_reduce_the_log(tiny_projector_path, tmp_path):
    out = tmp_path / "ddp"
    argv = tiny_argv(tiny_projector_path, out, tmp_path / "cache", "--max_train_steps", 4, "--train_batch_size", 4,
                     "--checkpointing_steps", 2, "--random_flip", "--estimate_latent_stats")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29517", SCRIPT, *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("held-out PSNR:") == 1  # only the main process reports and saves
    records = step_records(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # one line per step, not one per rank
    schedule = LMDMaskScheduler("cosine", 0.15, 0.75, 4)
    for r in records:
        assert r["rank_mask_ratios"] == [schedule.get_mask_ratio(r["step"] - 1)] * 2
    assert (out / "model_index.json").is_file() and [s for s, _ in list_checkpoints(str(out))] == [2, 4]
    # The main process estimated the latent statistics on the whole training set, and the other got its numbers (had
    # they differed, the two ranks would have looked for different latent caches).
    train_images = build_datasets(data_config(parse_lmd_args(argv)))[0]
    loader = torch.utils.data.DataLoader(train_images, batch_size=64)
    expected = estimate_latent_stats(VQModel.from_pretrained(tiny_projector_path), loader, max_batches=32)
    saved = json.loads((out / "vae" / "config.json").read_text())
    assert (saved["scaling_factor"], saved["shift_factor"]) == pytest.approx(expected, rel=1e-6)


def test_push_to_hub_uploads_the_pipeline_folder(tiny_projector_path, tmp_path, monkeypatch):
    from diffusers_lmd.training import hub

    calls = {}

    class Repo:
        repo_id = "someone/lmd-test"

    def fake_create_repo(repo_id, exist_ok, token, private):
        calls["create"] = dict(repo_id=repo_id, exist_ok=exist_ok, token=token, private=private)
        return Repo()

    def fake_upload_folder(repo_id, folder_path, commit_message, ignore_patterns, token):
        root = Path(folder_path)
        files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        uploaded = set(filter_repo_objects(files, ignore_patterns=ignore_patterns))  # what upload_folder sends
        calls["upload"] = dict(repo_id=repo_id, files=uploaded, token=token)
        return "https://huggingface.co/someone/lmd-test/commit/abc"

    monkeypatch.setattr(hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(hub, "upload_folder", fake_upload_folder)
    train(tiny_projector_path, tmp_path, "--max_train_steps", 2, "--checkpointing_steps", 1, "--push_to_hub",
          "--hub_model_id", "someone/lmd-test", "--hub_token", "hf_x")  # fmt: skip
    assert calls["create"] == dict(repo_id="someone/lmd-test", exist_ok=True, token="hf_x", private=False)
    files = calls["upload"]["files"]
    for name in (
        "model_index.json",
        "README.md",
        "lmd_pipeline.py",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "scheduler/scheduler_config.json",
        "reconstructions.png",
        "loss_curve.png",
        "mask_schedule.png",
    ):
        assert name in files, name  # fmt: skip
    assert not any(f.startswith("checkpoint-") for f in files)  # training state stays local
    card = (tmp_path / "out" / "README.md").read_text()
    assert "hf_x" not in card
    assert "SPEC" not in card and "method.md" not in card  # a card reads without the repository


def test_a_corrupt_image_is_skipped_with_a_warning_naming_it(tiny_projector_path, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.warns(UnreadableImageWarning, match="broken.jpg"):
        result, _ = train(tiny_projector_path, tmp_path, "--train_data_dir", images, "--max_train_steps", 2,
                          "--eval_split_ratio", 0.2)  # fmt: skip
    assert result.global_step == 2


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_projector_path, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = LMDModel.forward_loss

    def nan_from_step_5(target, pred, mask):
        calls["n"] += 1
        loss = original(target, pred, mask)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(LMDModel, "forward_loss", staticmethod(nan_from_step_5))
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 5 .*checkpoint-4, is intact"):
        train(tiny_projector_path, tmp_path, "--max_train_steps", 10, "--checkpointing_steps", 2)
    out = tmp_path / "out"
    assert [s for s, _ in list_checkpoints(str(out))] == [2, 4]
    assert not (out / "model_index.json").exists()  # nothing written after the NaN
    weights = load_file(out / "checkpoint-4" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert all(r["step"] <= 4 for r in step_records(out))
    state = json.loads((out / "checkpoint-4" / "training_state.json").read_text())
    assert state["global_step"] == 4


@pytest.mark.parametrize("kind", ["missing", "not_a_projector", "corrupt_weights"])
def test_a_bad_projector_path_fails_before_training(tiny_projector_path, tmp_path, kind):
    bad = tmp_path / "bad"
    if kind == "not_a_projector":
        LMDModel.from_preset("tiny", sample_size=8, in_channels=4).save_pretrained(bad)
    elif kind == "corrupt_weights":
        bad.mkdir()
        (bad / "config.json").write_text((Path(tiny_projector_path) / "config.json").read_text())
        (bad / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    message = {"missing": "neither an existing local folder nor a Hub repository id",
               "not_a_projector": "holds a 'LMDModel', not a VQModel or AutoencoderKL.*--projector_subfolder",
               "corrupt_weights": "--projector_path .*: the VQModel did not load"}[kind]  # fmt: skip
    args = parse_lmd_args(tiny_argv(str(bad), tmp_path / "out", tmp_path / "cache", "--max_train_steps", 2))
    with pytest.raises(ValueError, match=message):
        train_lmd(args)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_tensorboard_gets_scalars_and_reconstruction_grids(tiny_projector_path, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, args = train(tiny_projector_path, tmp_path, "--max_train_steps", 4, "--report_to", "tensorboard",
                    "--validation_steps", 2, "--checkpointing_steps", 1000)  # fmt: skip
    runs = [p.parent for p in (tmp_path / "out" / "logs").rglob("events.out.tfevents.*")]
    tags = {"scalars": set(), "images": set()}
    for run in runs:
        events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
        for kind in tags:
            tags[kind] |= set(events.Tags()[kind])
    assert {"loss", "mask_ratio", "lr", "img_s", "eval_psnr"} <= tags["scalars"]
    assert "reconstructions" in tags["images"]


def test_bf16_mixed_precision_trains_and_saves_float32_weights(tiny_projector_path, tmp_path):
    result, args = train(tiny_projector_path, tmp_path, "--max_train_steps", 3, "--mixed_precision", "bf16",
                         "--validation_steps", 2)  # fmt: skip
    assert result.global_step == 3 and np.isfinite(result.eval.psnr)
    saved = LMDModel.from_pretrained(tmp_path / "out" / "transformer")
    assert saved.dtype == torch.float32


def test_gradient_checkpointing_gives_the_same_training(tiny_projector_path, tmp_path, monkeypatch):
    import torch.utils.checkpoint as checkpoint

    calls, real = [], checkpoint.checkpoint
    monkeypatch.setattr(checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(tiny_projector_path, tmp_path, "--max_train_steps", 3, name="plain")
    assert not calls
    train(tiny_projector_path, tmp_path, "--max_train_steps", 3, "--gradient_checkpointing", name="ckpt")
    assert calls  # the blocks really were recomputed
    plain, ckpt = step_records(tmp_path / "plain"), step_records(tmp_path / "ckpt")
    assert [r["loss"] for r in plain] == pytest.approx([r["loss"] for r in ckpt], rel=1e-5)


def test_the_card_names_every_efficiency_metric_in_words():
    from diffusers_lmd.metrics import EfficiencyTracker
    from diffusers_lmd.training.lmd.trainer import CARD_EFFICIENCY_NAMES

    tracker = EfficiencyTracker(warmup_steps=1)
    for step in range(30):
        tracker.update(1.0 / (step + 1))
    assert set(tracker.summary()) - {"loss_events"} == set(CARD_EFFICIENCY_NAMES)
    assert all(name.split(":")[0] in ("MIT", "MLI", "MLT") for name in CARD_EFFICIENCY_NAMES.values())
