"""Fine-tuning: the offline MNIST image folder, label handling, the time-tracked loop, MAT from a log, the script."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from accelerate import Accelerator
from testing_utils import load_script

from diffusers_lmd import LMDForImageClassification, LMDModel, estimate_latent_stats, set_latent_stats
from diffusers_lmd.classification import finetune, summarize_accuracy, time_to_accuracy
from diffusers_lmd.data import (
    DataConfig,
    TensorDictDataset,
    build_labelled_datasets,
    encode_labels,
    export_mnist_imagefolder,
    pad_label_names,
)
from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.training import JsonlLogger, read_jsonl
from diffusers_lmd.training.args import add_data_args, add_label_args, data_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> str:
    return export_mnist_imagefolder(tmp_path_factory.mktemp("mnist") / "imagefolder")


def data_args(*argv: str) -> DataConfig:
    """Fine-tuning's data options, parsed from its flags as ``finetune_classifier.py`` parses them."""
    parser = argparse.ArgumentParser()
    add_label_args(add_data_args(parser))
    return data_config(parser.parse_args(list(argv)))


def test_mnist_export_is_a_class_subfolder_imagefolder(mnist_dir):
    for split, per_class in (("train", 400), ("validation", 100)):
        folders = sorted(os.listdir(os.path.join(mnist_dir, split)))
        assert folders == [str(d) for d in range(10)]
        assert all(len(os.listdir(os.path.join(mnist_dir, split, d))) == per_class for d in folders)
    before = os.path.getmtime(os.path.join(mnist_dir, "train", "3"))
    assert export_mnist_imagefolder(mnist_dir) == mnist_dir  # reused, not rewritten
    assert os.path.getmtime(os.path.join(mnist_dir, "train", "3")) == before
    with pytest.raises(ValueError, match="other settings"):
        export_mnist_imagefolder(mnist_dir, seed=1)


def test_mnist_loads_like_a_user_imagefolder(mnist_dir):
    args = data_args("--train_data_dir", mnist_dir, "--resolution", "16", "--max_train_samples", "50")
    train, evaluation, names = build_labelled_datasets(args)
    assert names == [str(d) for d in range(10)]
    assert len(train) == 50 and len(evaluation) == 256  # --max_eval_samples default
    item = train[0]
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].min() >= -1
    assert 0 <= int(item["labels"]) < 10
    whole = datasets.load_dataset("imagefolder", data_dir=mnist_dir, split="validation")
    assert sorted(whole.unique("label")) == list(range(10)) and len(whole) == 1000


def test_bad_label_column_names_it_and_the_available_ones(mnist_dir):
    args = data_args("--train_data_dir", mnist_dir, "--label_column", "digit", "--max_train_samples", "8")
    with pytest.raises(ValueError, match=r"--label_column 'digit' is not in the dataset; its columns are \['image', "):
        build_labelled_datasets(args)


def test_num_labels_can_add_classes_but_not_drop_them():
    assert pad_label_names(["cat", "dog"], None) == ["cat", "dog"]
    assert pad_label_names(["0", "1"], 4) == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="--num_labels 1 is fewer than the 2 classes"):
        pad_label_names(["cat", "dog"], 1)


def test_string_and_integer_labels_share_one_class_mapping():
    train = datasets.Dataset.from_dict({"image": [0, 1, 2], "kind": ["dog", "cat", "dog"]})
    evaluation = datasets.Dataset.from_dict({"image": [3, 4], "kind": ["emu", "cat"]})
    train, evaluation, names = encode_labels(train, evaluation, "kind")
    assert names == ["cat", "dog", "emu"]
    assert train["kind"] == [1, 0, 1] and evaluation["kind"] == [2, 0]
    ints = datasets.Dataset.from_dict({"image": [0, 1], "y": [0, 3]})
    assert encode_labels(ints, ints, "y")[2] == ["0", "1", "2", "3"]


def test_mat_is_computed_from_an_eval_log(tmp_path):
    path = str(tmp_path / "eval_log.jsonl")
    logger = JsonlLogger(path)
    top1 = [0.1, 0.3, 0.3, 0.5, 0.4]
    top5 = [0.5, 0.6, 0.7, 0.7, 0.8]
    for i, (a1, a5) in enumerate(zip(top1, top5)):
        logger.log({"step": 10 * i, "time": 4.0 * i, "top1": a1, "top5": a5})
    summary = summarize_accuracy(read_jsonl(path), target_top1=0.45)
    assert summary["mat_at_1"] == pytest.approx((12.0 - 0.0) / 2)  # improvements at 0 s, 4 s, 12 s
    assert summary["mat_at_5"] == pytest.approx((16.0 - 0.0) / 3)  # at 0 s, 4 s, 8 s, 16 s
    assert summary["final_top1"] == 0.4 and summary["best_top1"] == 0.5 and summary["steps"] == 40
    assert summary["time_to_target_s"] == 12.0
    assert time_to_accuracy(read_jsonl(path), 0.9) is None
    flat = summarize_accuracy([{"step": 0, "time": 0.0, "top1": 0.2, "top5": 0.5}] * 3)
    assert math.isinf(flat["mat_at_1"])
    with pytest.raises(ValueError, match="No evaluations"):
        summarize_accuracy([])


def learnable_latents(n: int, seed: int) -> TensorDictDataset:
    """Latents whose class is the sign pattern of two channel means: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    latents = torch.randn(n, 4, 8, 8, generator=g) * 0.5
    latents[:, 0] += torch.where(labels % 2 == 1, 1.0, -1.0)[:, None, None]
    latents[:, 1] += torch.where(labels >= 2, 1.0, -1.0)[:, None, None]
    return TensorDictDataset(latents=latents, labels=labels)


def run_loop(max_train_steps: int, **kwargs) -> list[dict]:
    torch.manual_seed(0)
    model = LMDForImageClassification.from_lmd_model(LMDModel.from_preset("tiny", sample_size=8), num_labels=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    accelerator = Accelerator(cpu=True)
    train = torch.utils.data.DataLoader(learnable_latents(256, 0), batch_size=32, shuffle=True)
    evaluation = torch.utils.data.DataLoader(learnable_latents(128, 1), batch_size=64)
    parts = accelerator.prepare(model, optimizer, train, evaluation, scheduler)
    return finetune(
        accelerator, parts[0], parts[1], parts[4], parts[2], parts[3], max_train_steps=max_train_steps, **kwargs
    )


def test_finetune_loop_evaluates_on_schedule_and_learns(fresh_accelerate_state, one_thread):
    logged = []
    records = run_loop(30, eval_steps=10, log=logged.append, show_progress=False)
    assert [r["step"] for r in records] == [0, 10, 20, 30] and logged == records
    assert records[0]["time"] == 0.0 and records[0]["train_loss"] is None
    assert all(b["time"] > a["time"] for a, b in zip(records, records[1:]))
    assert records[-1]["top1"] > 0.6 > records[0]["top1"]  # chance is 0.25
    assert records[-1]["top5"] == 1.0  # only 4 classes


def test_finetune_loop_stops_on_the_time_budget_and_checkpoints(fresh_accelerate_state):
    saved = []
    records = run_loop(
        10_000,
        eval_steps=1_000,
        max_train_seconds=0.5,
        checkpointing_steps=1,
        save_checkpoint=lambda step, seconds: saved.append((step, seconds)),
        show_progress=False,
    )
    last = records[-1]
    assert 0 < last["step"] < 10_000 and last["time"] >= 0.5  # stopped by the clock, then evaluated once more
    assert [step for step, _ in saved] == list(range(1, last["step"] + 1))
    assert all(b > a for (_, a), (_, b) in zip(saved, saved[1:]))  # the clock the checkpoints store keeps running


def test_finetune_loop_stops_clearly_on_nan_loss(fresh_accelerate_state):
    model = LMDForImageClassification.from_lmd_model(LMDModel.from_preset("tiny", sample_size=8), num_labels=4)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    optimizer = torch.optim.AdamW(model.parameters())
    loader = torch.utils.data.DataLoader(learnable_latents(64, 0), batch_size=16)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(FloatingPointError, match="loss is nan at step 1, before the update"):
        finetune(Accelerator(cpu=True), model, optimizer, scheduler, loader, loader, max_train_steps=5, eval_steps=5)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) or name == "classifier.bias", name  # the NaN bias was set above


@pytest.fixture
def pretrained_pipeline(make_pipeline_components, tmp_path) -> str:
    """A saved tiny LMDPipeline (random weights) whose projector's latents are normalised to about unit variance."""
    parts = make_pipeline_components("vq", seed=0)
    set_latent_stats(parts["vae"], *estimate_latent_stats(parts["vae"], [torch.rand(16, 3, 16, 16) * 2 - 1]))
    LMDPipeline(**parts).save_pretrained(tmp_path / "pipeline")
    return str(tmp_path / "pipeline")


@pytest.mark.slow
def test_finetune_script_beats_chance_on_held_out_digits_and_resumes(
    pretrained_pipeline, mnist_dir, tmp_path, fresh_accelerate_state, one_thread
):
    out = tmp_path / "out"
    flags = ["--pretrained_path", pretrained_pipeline, "--train_data_dir", mnist_dir, "--output_dir", str(out)]
    flags += ["--resolution", "16", "--max_train_samples", "1024", "--max_eval_samples", "200", "--report_to", "none"]
    flags += ["--train_batch_size", "32", "--eval_steps", "100", "--lr_scheduler", "constant", "--seed", "0"]
    flags += ["--checkpointing_steps", "100", "--checkpoints_total_limit", "1"]
    flags += ["--latent_cache_dir", str(tmp_path / "latents")]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, str(REPO / "training" / "finetune_classifier.py"), *flags, "--max_train_steps", "200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    records = read_jsonl(str(out / "eval_log.jsonl"))
    assert [r["step"] for r in records] == [0, 100, 200]
    summary = json.loads((out / "results.json").read_text())
    assert summary["final_top1"] == records[-1]["top1"] > 0.2  # 10 classes: chance is 0.1 on 200 held-out digits
    assert summary["mat_at_1"] == summarize_accuracy(records)["mat_at_1"]
    assert (out / "accuracy_curve.png").stat().st_size > 0
    assert "MAT@1" in (out / "README.md").read_text()
    model = LMDForImageClassification.from_pretrained(out)
    assert model.config.num_labels == 10 and model.config.label_names[3] == "3" and model.projector is not None

    script = load_script("finetune_classifier")
    resumed = script.main(script.parse_args([*flags, "--max_train_steps", "220", "--resume_from_checkpoint", "latest"]))
    after = read_jsonl(str(out / "eval_log.jsonl"))
    assert after[:3] == records and after[3]["step"] == 220 and after[3]["time"] > records[2]["time"]
    assert resumed["steps"] == 220 and resumed["final_top1"] == after[3]["top1"]
