"""The shared training infrastructure: flags, atomic checkpoints, pruning, resume paths, logs, optimisers, cards."""

import argparse
import json
import os

import pytest
import torch
from accelerate import Accelerator

from diffusers_lmd import LMDModel
from diffusers_lmd.training import (
    JsonlLogger,
    add_training_args,
    build_ema,
    build_lr_scheduler,
    build_optimizer,
    check_training_args,
    effective_learning_rate,
    list_checkpoints,
    load_checkpoint,
    plot_loss_curve,
    plot_mask_schedule,
    read_jsonl,
    register_ema_hooks,
    resolve_resume_path,
    save_checkpoint,
    save_model_card,
)
from diffusers_lmd.training.args import optimizer_config
from diffusers_lmd.training.optim import OptimizerConfig

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def parse(*argv):
    return add_training_args(argparse.ArgumentParser()).parse_args(list(argv))


def tiny_state(seed=0):
    torch.manual_seed(seed)
    model = LMDModel.from_preset("tiny", sample_size=4, in_channels=4, patch_size=2)
    args = parse("--learning_rate", "1e-3", "--lr_warmup_steps", "2")
    optimizer = build_optimizer(model, optimizer_config(args), args.learning_rate)
    scheduler = build_lr_scheduler(optimizer, optimizer_config(args), max_train_steps=10, num_processes=1)
    return model, optimizer, scheduler, args


def test_every_optimizer_option_is_a_flag_with_its_default():
    args = parse("--adam_beta2", "0.999", "--lr_warmup_steps", "3")
    config = optimizer_config(args)
    assert config == OptimizerConfig(adam_beta2=0.999, lr_warmup_steps=3)
    assert optimizer_config(parse()) == OptimizerConfig()  # the flags' defaults are the options' defaults


def one_step(model, optimizer, scheduler):
    loss = model(torch.randn(2, 4, 4, 4), mask_ratio=0.5, generator=torch.Generator().manual_seed(0)).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_flag_names_follow_diffusers_examples():
    args = parse()
    for name in (
        "train_batch_size",
        "max_train_steps",
        "gradient_accumulation_steps",
        "lr_scheduler",
        "adam_beta1",
        "checkpoints_total_limit",
        "resume_from_checkpoint",
        "report_to",
        "hub_model_id",
    ):
        assert hasattr(args, name)  # fmt: skip
    assert (args.adam_beta1, args.adam_beta2) == (0.9, 0.95)  # MAE's betas


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--train_batch_size", "0"], "--train_batch_size"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit"),
        (["--learning_rate", "-1"], "--learning_rate"),
        (["--max_train_steps", "0"], "--max_train_steps"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag):
    with pytest.raises(ValueError, match=flag):
        check_training_args(parse(*argv))


def test_scale_lr_is_maes_rule():
    args = parse(
        "--scale_lr", "--learning_rate", "1.5e-4", "--train_batch_size", "64", "--gradient_accumulation_steps", "2"
    )
    assert effective_learning_rate(args, num_processes=2) == pytest.approx(1.5e-4 * 256 / 256)
    assert effective_learning_rate(parse("--learning_rate", "3e-4"), num_processes=8) == 3e-4


def test_weight_decay_spares_biases_norms_and_tokens():
    model, optimizer, _, _ = tiny_state()
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.cls_token) in no_decay_ids and id(model.norm.weight) in no_decay_ids
    assert id(model.patch_embed.weight) not in no_decay_ids


def test_adan_optimizer_steps():
    pytest.importorskip("adan_pytorch")
    model = LMDModel.from_preset("tiny", sample_size=4, in_channels=4, patch_size=2)
    optimizer = build_optimizer(model, optimizer_config(parse("--optimizer", "adan")), 1e-3)
    before = model.patch_embed.weight.detach().clone()
    model(torch.randn(2, 4, 4, 4), mask_ratio=0.5).loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.patch_embed.weight)


def test_checkpoints_are_pruned_to_the_newest_and_resume_restores_state(tmp_path):
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(*tiny_state()[:3])
    for step in (1, 2, 3):
        one_step(model, optimizer, scheduler)
        save_checkpoint(accelerator, str(tmp_path), step, total_limit=2, extra_state={"epoch": 0})
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [2, 3]
    latest = resolve_resume_path(str(tmp_path), "latest")
    assert latest.endswith("checkpoint-3")
    saved_weight = model.patch_embed.weight.detach().clone()
    saved_lr = scheduler.get_last_lr()[0]
    one_step(model, optimizer, scheduler)
    state = load_checkpoint(accelerator, latest)
    assert state == {"global_step": 3, "epoch": 0}
    assert torch.equal(model.patch_embed.weight, saved_weight)
    assert scheduler.get_last_lr()[0] == saved_lr


def test_a_run_killed_while_saving_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(*tiny_state()[:3])
    save_checkpoint(accelerator, str(tmp_path), 1)

    def dies_half_way(output_dir, **kwargs):
        os.makedirs(output_dir, exist_ok=True)
        open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(accelerator, "save_state", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, str(tmp_path), 2, total_limit=1)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [1]
    latest = resolve_resume_path(str(tmp_path), "latest")
    assert latest.endswith("checkpoint-1")
    load_checkpoint(accelerator, latest)  # still loads


def test_resolve_resume_path(tmp_path):
    assert resolve_resume_path(str(tmp_path), None) is None
    assert resolve_resume_path(str(tmp_path), "latest") is None  # nothing yet: a fresh run
    with pytest.raises(ValueError, match="neither a checkpoint folder"):
        resolve_resume_path(str(tmp_path), "checkpoint-7")
    (tmp_path / "checkpoint-7").mkdir()
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume_path(str(tmp_path), "checkpoint-7")
    (tmp_path / "checkpoint-7" / "training_state.json").write_text(json.dumps({"global_step": 7}))
    assert resolve_resume_path(str(tmp_path), "checkpoint-7") == str(tmp_path / "checkpoint-7")


def test_ema_weights_travel_with_checkpoints(tmp_path):
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler, args = tiny_state()
    ema = build_ema(model, optimizer_config(args))
    register_ema_hooks(accelerator, ema)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    for _ in range(3):
        one_step(model, optimizer, scheduler)
        ema.step(model.parameters())
    path = save_checkpoint(accelerator, str(tmp_path), 3)
    assert os.path.isfile(os.path.join(path, "ema", "diffusion_pytorch_model.safetensors"))
    saved = [p.clone() for p in ema.shadow_params]
    one_step(model, optimizer, scheduler)
    ema.step(model.parameters())
    load_checkpoint(accelerator, path)
    assert all(torch.equal(a, b) for a, b in zip(saved, ema.shadow_params))
    assert ema.optimization_step == 3


def test_jsonl_logger_resume_drops_lines_after_the_checkpoint(tmp_path):
    path = str(tmp_path / "train_log.jsonl")
    log = JsonlLogger(path)
    for step in range(1, 6):
        log.log({"step": step, "loss": 1.0 / step, "mask_ratio": 0.15 + 0.1 * step, "lr": 1e-3, "time": step})
    resumed = JsonlLogger(path, resume_step=3)
    assert resumed.time_offset == 3
    resumed.log({"step": 4, "loss": 0.2, "mask_ratio": 0.5, "lr": 1e-3, "time": 4.5})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3, 4]
    records = read_jsonl(path)
    plot_loss_curve(records, str(tmp_path / "loss.png"))
    plot_mask_schedule(records, str(tmp_path / "mask.png"))
    assert (tmp_path / "loss.png").stat().st_size > 1000 and (tmp_path / "mask.png").stat().st_size > 1000


def test_model_card_never_contains_the_token(tmp_path):
    args = parse("--hub_token", "hf_secret", "--push_to_hub")
    (tmp_path / "grid.png").write_bytes(b"png")
    path = save_model_card(
        str(tmp_path), title="t", description="d", usage="print(1)", args=args,
        metrics={"held-out PSNR (dB)": 21.5}, images=[("Samples", "grid.png"), ("Missing", "nope.png")],
    )  # fmt: skip
    text = open(path).read()
    assert "hf_secret" not in text and "hub_token" not in text
    assert "library_name: diffusers" in text and "![Samples](grid.png)" in text and "nope.png" not in text
    assert "| held-out PSNR (dB) | 21.5 |" in text
