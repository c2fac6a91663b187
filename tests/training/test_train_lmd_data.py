"""train_lmd ready for a GPU user (issue 14 items 1, 5, 6, 7, 8, 12): its console, data preparation per process,
the projector's precision, flags that do what they say, and a run that finishes without matplotlib."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import TINY_PROJECTOR
from diffusers import AutoencoderKL
from PIL import Image
from testing_utils import run_and_resume, step_records, tiny_argv, train

from diffusers_lmd import LMDModel, evaluate_reconstruction
from diffusers_lmd.data import ImageDataset
from diffusers_lmd.projector import encode_images
from diffusers_lmd.training import LMDTrainer, NonFiniteLossError, projector_dtype, read_jsonl
from diffusers_lmd.training.args import data_config, parse_lmd_args
from diffusers_lmd.training.lmd import setup as lmd_setup
from diffusers_lmd.training.lmd import trainer as lmd_trainer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def image_folder(root: Path, count: int = 8, size: tuple[int, int] = (24, 20)) -> str:
    """Photos larger than 16 px, so a random crop has somewhere to go."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return str(root)


@pytest.mark.slow
def test_the_script_prints_its_plan_checkpoints_validation_and_resume(tiny_projector_path, tmp_path):
    out = tmp_path / "out"
    flags = tiny_argv(tiny_projector_path, out, tmp_path / "cache", "--checkpointing_steps", 1, "--validation_steps", 1)
    run = run_and_resume("train_lmd", flags)
    log = run.stderr
    assert "Distributed environment" in log and "Training 1 steps" in log and "Training 2 steps" in log
    assert f"Saved checkpoint {out / 'checkpoint-1'}" in log and f"Saved checkpoint {out / 'checkpoint-2'}" in log
    assert f"Resumed from {out / 'checkpoint-1'} at step 1" in log
    assert "step 1: held-out PSNR" in log and "step 2: held-out PSNR" in log
    assert run.stdout.count("held-out PSNR:") == 2  # the final report, once per run


def test_a_missing_projector_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_lmd_args(["--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "error: --projector_path is required" in capsys.readouterr().err


def test_datasets_load_on_the_main_process_first_and_stats_are_estimated_on_the_placed_projector(
    tiny_projector_path, tmp_path, monkeypatch
):
    inside, seen = [], {}
    original_first, original_build = Accelerator.main_process_first, lmd_trainer.build_datasets

    @contextlib.contextmanager
    def main_process_first(self):
        with original_first(self):
            inside.append(True)
            yield
            inside.pop()

    def build_datasets(data, cache_dir=None):
        seen["inside"] = bool(inside)
        return original_build(data, cache_dir)

    def estimate(vae, loader, max_batches=None):
        seen["projector"] = (vae.device, vae.dtype)
        return 1.25, 0.5

    monkeypatch.setattr(Accelerator, "main_process_first", main_process_first)
    monkeypatch.setattr(lmd_trainer, "build_datasets", build_datasets)
    monkeypatch.setattr(lmd_setup, "estimate_latent_stats", estimate)
    argv = tiny_argv(tiny_projector_path, tmp_path / "out", tmp_path / "cache", "--estimate_latent_stats",
                     "--mixed_precision", "bf16")  # fmt: skip
    trainer = LMDTrainer(parse_lmd_args(argv))
    assert seen == {"inside": True, "projector": (trainer.accelerator.device, torch.bfloat16)}  # placed first
    assert (trainer.vae.config.scaling_factor, trainer.vae.config.shift_factor) == (1.25, 0.5)


def saved_kl_projector(path: Path) -> str:
    torch.manual_seed(0)
    AutoencoderKL(**TINY_PROJECTOR).save_pretrained(path)  # force_upcast=True, as Stable Diffusion's VAE
    return str(path)


class Precision:
    def __init__(self, mixed_precision: str):
        self.mixed_precision = mixed_precision


def test_the_projector_stays_fp32_where_its_config_or_the_flag_asks(tiny_projector_path, tmp_path):
    from diffusers import VQModel

    kl = AutoencoderKL.from_pretrained(saved_kl_projector(tmp_path / "kl"))
    vq = VQModel.from_pretrained(tiny_projector_path)
    flags = lambda *extra: parse_lmd_args(["--projector_path", "x", *extra])  # noqa: E731
    assert kl.config.force_upcast and not vq.config.force_upcast
    upcast = lambda *extra: flags(*extra).upcast_projector  # noqa: E731
    assert projector_dtype(upcast(), kl, Precision("fp16")) == torch.float32
    assert projector_dtype(upcast(), vq, Precision("bf16")) == torch.bfloat16  # as diffusers' scripts cast it
    assert projector_dtype(upcast("--upcast_projector"), vq, Precision("fp16")) == torch.float32
    assert projector_dtype(upcast("--no-upcast_projector"), kl, Precision("bf16")) == torch.bfloat16
    assert projector_dtype(upcast(), kl, Precision("no")) == torch.float32


def test_bf16_training_on_the_cache_of_an_upcast_projector(tmp_path):
    projector = saved_kl_projector(tmp_path / "kl")
    args = parse_lmd_args(tiny_argv(projector, tmp_path / "out", tmp_path / "cache", "--mixed_precision", "bf16",
                                    "--max_train_steps", 3, "--validation_steps", 3))  # fmt: skip
    trainer = LMDTrainer(args)
    assert trainer.vae.dtype == torch.float32  # force_upcast
    first = trainer.train_loader.dataset[0]["latents"]
    pixels = lmd_trainer.build_datasets(data_config(args))[0][0]["pixel_values"]
    exact = encode_images(AutoencoderKL.from_pretrained(projector), pixels[None])[0]
    assert first.dtype == torch.float32  # cached as the fp32 projector encodes (bf16 would be ~1e-3 off)
    torch.testing.assert_close(first, exact, rtol=0, atol=1e-5)  # batched vs single-image kernels only
    result = trainer.train()
    assert result.global_step == 3 and np.isfinite(result.final_loss) and np.isfinite(result.eval.psnr)
    assert LMDModel.from_pretrained(tmp_path / "out" / "transformer").dtype == torch.float32


def test_random_crops_are_redrawn_each_epoch_and_resume_exactly(tmp_path):
    import datasets

    table = datasets.load_dataset("imagefolder", data_dir=image_folder(tmp_path / "images"))["train"]
    crops = ImageDataset(table, "image", 16, center_crop=False, seed=3)
    first = crops[0]["pixel_values"]
    crops.set_epoch(1)
    second = crops[0]["pixel_values"]
    assert not torch.equal(first, second) and torch.equal(second, crops[0]["pixel_values"])
    crops.set_epoch(0)
    assert torch.equal(crops[0]["pixel_values"], first)  # epoch 0: the crops the latent caches were built from
    loader = Accelerator(cpu=True).prepare(torch.utils.data.DataLoader(crops, batch_size=2))
    loader.set_epoch(5)  # what the trainer calls at each epoch, on a resumed one too
    assert crops.epoch == 5


def test_online_encoding_draws_new_crops_each_epoch_and_the_cache_says_it_keeps_one(
    tiny_projector_path, tmp_path, monkeypatch, caplog
):
    epochs, original = [], ImageDataset.crop_generator
    monkeypatch.setattr(ImageDataset, "crop_generator", lambda self, i: epochs.append(self.epoch) or original(self, i))
    images = image_folder(tmp_path / "images")
    common = ("--train_data_dir", images, "--eval_split_ratio", 0.25, "--train_batch_size", 3, "--max_train_steps", 4)
    train(tiny_projector_path, tmp_path, *common, "--no-cache_latents", name="online")  # 6 images, 2 steps an epoch
    assert {0, 1} <= set(epochs)
    with caplog.at_level(logging.WARNING, logger="diffusers_lmd"):
        train(tiny_projector_path, tmp_path, *common, name="cached")
    assert "The latent cache holds one view per image" in caplog.text


def test_dataloader_workers_read_the_latent_cache_in_the_same_order(tiny_projector_path, tmp_path):
    common = ("--max_train_steps", 3, "--train_batch_size", 4)
    train(tiny_projector_path, tmp_path, *common, name="main")
    train(tiny_projector_path, tmp_path, *common, "--dataloader_num_workers", 1, name="workers")
    losses = [[r["loss"] for r in step_records(tmp_path / name)] for name in ("main", "workers")]
    assert losses[0] == losses[1]


def test_validation_runs_on_the_ema_weights_and_training_continues_on_its_own(tiny_projector_path, tmp_path):
    common = ("--max_train_steps", 3, "--use_ema", "--checkpointing_steps", 2)
    result, args = train(tiny_projector_path, tmp_path, *common, "--validation_steps", 2, name="validated")
    logged = [
        r["eval_psnr"]
        for r in read_jsonl(str(tmp_path / "validated" / "train_log.jsonl"))
        if "eval_psnr" in r and r["step"] == 2
    ]
    checkpoint = tmp_path / "validated" / "checkpoint-2"
    rebuilt = LMDTrainer(args)  # the same projector and held-out images
    ema, raw = (
        evaluate_reconstruction(LMDModel.from_pretrained(checkpoint / sub), rebuilt.vae, rebuilt.eval_dataset).psnr
        for sub in ("ema", "transformer")
    )
    assert logged == [pytest.approx(ema, abs=1e-4)] and abs(ema - raw) > 1e-3
    train(tiny_projector_path, tmp_path, *common, name="plain")
    losses = [[r["loss"] for r in step_records(tmp_path / name)] for name in ("validated", "plain")]
    assert losses[0] == losses[1]  # the trained weights were restored after validating


def test_nan_latents_stop_the_run_and_name_the_projector(tiny_projector_path, tmp_path, monkeypatch):
    original = lmd_trainer.latents_for_batch

    def nan_at_step_3(batch, vae, random_flip, generator, calls=[]):  # noqa: B006 (a call counter)
        calls.append(1)
        latents = original(batch, vae, random_flip, generator)
        return latents * float("nan") if len(calls) == 3 else latents

    monkeypatch.setattr(lmd_trainer, "latents_for_batch", nan_at_step_3)
    with pytest.raises(
        NonFiniteLossError, match=r"at step 3 .* because this batch's latents hold NaN.*--upcast_projector"
    ):
        train(tiny_projector_path, tmp_path, "--max_train_steps", 5)


def test_a_run_finishes_without_matplotlib(no_matplotlib, tiny_projector_path, tmp_path, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING, logger="diffusers_lmd"):
        result, _ = train(tiny_projector_path, tmp_path, "--max_train_steps", 2)
    out = tmp_path / "out"
    assert result.global_step == 2 and (out / "model_index.json").is_file() and (out / "README.md").is_file()
    assert (out / "lmd_pipeline.py").is_file()  # the package-data copy, as a pip install has it
    assert not (out / "loss_curve.png").exists() and "Skipped plot_loss_curve" in caplog.text


def test_every_flag_the_running_on_gpus_docs_name_exists(capsys):
    import re

    from testing_utils import load_script

    from diffusers_lmd.training.args import build_lmd_parser

    docs = (ROOT / "docs" / "training.md").read_text()
    section = docs[docs.index("## Running on GPUs") : docs.index("## What a run writes")]
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", section))
    helps = build_lmd_parser().format_help()
    for script in ("train_projector", "finetune_classifier"):
        with pytest.raises(SystemExit):
            load_script(script).parse_args(["--help"])
        helps += capsys.readouterr().out
    launcher = {"--multi_gpu", "--num_processes"}  # accelerate launch's own
    missing = sorted(flag for flag in named - launcher if not re.search(rf"(?<![\w-]){flag}(?![\w-])", helps))
    assert not missing, f"docs/training.md names flags no script has: {missing}"
    assert "(part B)" not in section
