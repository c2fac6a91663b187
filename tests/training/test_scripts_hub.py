"""The Hub side of the projector and classifier scripts (issue 14 items 2, 3, 7, 9), with ``create_repo`` and
``upload_folder`` replaced by recorders: the repository is created before training, checkpoints can be pushed,
the model card is a ``huggingface_hub.ModelCard``, and the classifier's EMA is trained, validated and saved."""

from __future__ import annotations

import argparse
from concurrent.futures import Future
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from diffusers import VQModel
from huggingface_hub import ModelCard
from huggingface_hub.errors import HFValidationError
from safetensors.torch import load_file
from testing_utils import TINY_PROJECTOR_FLAGS, FakeHub, load_script

from diffusers_lmd.data import build_datasets
from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.training import add_training_args
from diffusers_lmd.training.args import data_config
from diffusers_lmd.training.ema import ema_weights
from diffusers_lmd.training.hub import HUB_STAGING_DIR, HubUploader, save_model_card
from diffusers_lmd.training.logging import read_jsonl
from diffusers_lmd.training.projector import evaluate_projector

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("restore_verbosity")  # the scripts call setup_logging


def parse(*argv):
    return add_training_args(argparse.ArgumentParser()).parse_args(list(argv))


def test_model_card_metadata_is_model_card_data_with_the_licence_asked_for(tmp_path):
    args = parse("--hub_license", "mit", "--hub_token", "hf_secret", "--push_to_hub")
    metadata = dict(tags=["lmd"], pipeline_tag="image-to-image", base_model="user/lmd-model")
    path = save_model_card(str(tmp_path), title="t", description="d", usage="print(1)", args=args, **metadata)
    card = ModelCard.load(path)
    assert card.data.license == "mit" and card.data.library_name == "diffusers"
    assert card.data.tags == ["diffusers", "diffusers-lmd", "lmd"] and card.data.pipeline_tag == "image-to-image"
    assert card.data.base_model == "user/lmd-model" and "hf_secret" not in card.content
    overridden = ModelCard.load(
        save_model_card(str(tmp_path), title="t", description="d", usage="", args=args, license="other")
    )
    assert overridden.data.license == "other"
    unstated = ModelCard.load(save_model_card(str(tmp_path), title="t", description="d", usage="", args=parse()))
    assert unstated.data.license is None and "license" not in unstated.content.split("---")[1]


def test_hub_strategy_needs_push_to_hub():
    from diffusers_lmd.training import check_training_args

    with pytest.raises(ValueError, match="--hub_strategy every_save uploads to the Hub: add --push_to_hub"):
        check_training_args(parse("--hub_strategy", "every_save"))


def test_a_bad_repo_name_stops_the_projector_run_before_training(tmp_path, monkeypatch, fresh_accelerate_state):
    out = tmp_path / "out"
    fake = FakeHub(monkeypatch, fail_create=HFValidationError("Repo id must use alphanumeric chars"), watch=out)
    args = load_script("train_projector").parse_args(
        [*TINY_PROJECTOR_FLAGS, "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "bad//name"]
    )
    from diffusers_lmd.training.projector import train_projector

    with pytest.raises(ValueError, match=r"repository 'bad//name' could not be created.*--hub_model_id"):
        train_projector(args)
    assert fake.created[0]["repo_id"] == "bad//name" and fake.created[0]["existing"] == []
    assert not any(out.iterdir())  # no step, no log, no checkpoint: it failed first


def test_projector_pushes_every_checkpoint_then_the_folder(tmp_path, monkeypatch, fresh_accelerate_state, one_thread):
    out = tmp_path / "out"
    fake = FakeHub(monkeypatch, watch=out)
    argv = [*TINY_PROJECTOR_FLAGS, "--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1"]
    argv += ["--validation_steps", "1"]
    argv += [
        "--push_to_hub",
        "--hub_model_id",
        "proj",
        "--hub_strategy",
        "every_save",
        "--use_ema",
        "--hub_license",
        "mit",
    ]
    from diffusers_lmd.training.projector import train_projector

    args = load_script("train_projector").parse_args(argv)
    result = train_projector(args)
    assert fake.created == [dict(repo_id="proj", token=None, private=False, existing=[])] + fake.created[1:]
    assert [(u["message"], u["background"]) for u in fake.uploads] == [
        ("Training in progress, step 1", True),
        ("Training in progress, step 2", True),
        ("Upload model trained with diffusers-lmd", False),
    ]
    model_files = {"config.json", "diffusion_pytorch_model.safetensors", "README.md", "projector_metrics.json"}
    for checkpoint_push in fake.uploads[:2]:
        assert model_files <= checkpoint_push["files"] and checkpoint_push["folder"].name == HUB_STAGING_DIR
        assert checkpoint_push["config"]["scaling_factor"] != VQModel().config.scaling_factor  # estimated then
    final = fake.uploads[2]
    assert final["folder"] == out and model_files | {"train_log.jsonl"} <= final["files"]
    assert not any(f.startswith(("checkpoint-", HUB_STAGING_DIR)) for f in final["files"])
    assert final["config"]["scaling_factor"] == pytest.approx(result["scaling_factor"])
    assert not (out / HUB_STAGING_DIR).exists() and ModelCard.load(out / "README.md").data.license == "mit"
    # --use_ema: validation runs on the EMA weights and the saved projector is the EMA, not the raw weights
    ema = load_file(out / "checkpoint-2" / "ema" / "diffusion_pytorch_model.safetensors")
    saved = load_file(out / "diffusion_pytorch_model.safetensors")
    raw = load_file(out / "checkpoint-2" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in ema.items())
    assert any(not torch.equal(raw[f"vae.{k}"], v) for k, v in ema.items())
    step_2 = [r for r in read_jsonl(str(out / "train_log.jsonl")) if r["step"] == 2][0]
    ema_2 = VQModel.from_pretrained(out / "checkpoint-2" / "ema")
    eval_loader = torch.utils.data.DataLoader(build_datasets(data_config(args))[1], batch_size=args.train_batch_size)
    assert step_2["eval_psnr"] == pytest.approx(evaluate_projector(ema_2, eval_loader)["eval_psnr"], abs=1e-4)


def test_uploader_skips_a_checkpoint_while_the_previous_upload_runs(tmp_path, monkeypatch):
    fake = FakeHub(monkeypatch)
    uploader = HubUploader(str(tmp_path), "repo", strategy="every_save")
    running = Future()
    uploader.pending = running
    assert uploader.push_checkpoint(5, lambda folder: (Path(folder) / "config.json").write_text("{}")) is None
    running.set_exception(RuntimeError("network down"))  # a failed background push is reported, not fatal
    (tmp_path / "config.json").write_text("{}")
    assert uploader.push_final().endswith("commit/2") and fake.uploads[-1]["folder"] == tmp_path
    assert HubUploader.from_args(parse("--output_dir", str(tmp_path))) is None
    assert HubUploader.from_args(parse("--output_dir", str(tmp_path), "--push_to_hub"), is_main_process=False) is None


@pytest.fixture
def hub_pipeline(make_pipeline_components, tmp_path, monkeypatch):
    """An LMD pipeline repository as ``train_lmd.py`` pushes it, in a hand-built Hub cache read offline."""
    from testing_utils import hub_repo

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    LMDPipeline(**make_pipeline_components("vq")).save_pretrained(hub_repo(tmp_path / "hub", "user/lmd-model"))
    return "user/lmd-model", str(tmp_path / "hub")


def test_classifier_from_a_hub_repo_with_ema_and_checkpoint_pushes(
    hub_pipeline, make_image_folder, tmp_path, monkeypatch, fresh_accelerate_state, one_thread
):
    repo, cache = hub_pipeline
    out = tmp_path / "out"
    fake = FakeHub(monkeypatch, watch=out)
    script = load_script("finetune_classifier")
    argv = ["--pretrained_path", repo, "--cache_dir", cache, "--train_data_dir", make_image_folder(tmp_path / "img")]
    argv += ["--output_dir", str(out), "--resolution", "16", "--train_batch_size", "4", "--eval_split_ratio", "0.25"]
    argv += ["--max_train_steps", "2", "--eval_steps", "1", "--checkpointing_steps", "1", "--report_to", "none"]
    argv += ["--latent_cache_dir", str(tmp_path / "latents"), "--use_ema", "--ema_max_decay", "0.5"]
    argv += ["--push_to_hub", "--hub_model_id", "clf", "--hub_strategy", "every_save", "--learning_rate", "0.05"]
    summary = script.main(script.parse_args(argv))
    assert summary["steps"] == 2 and fake.created[0]["existing"] == []
    assert [u["background"] for u in fake.uploads] == [True, True, False]
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md", "results.json"} <= fake.uploads[0][
        "files"
    ]
    assert ModelCard.load(out / "README.md").data.base_model == repo
    ema_1, ema = (load_file(out / f"checkpoint-{s}" / "ema" / "diffusion_pytorch_model.safetensors") for s in (1, 2))
    raw = load_file(out / "checkpoint-2" / "model.safetensors")
    saved = load_file(out / "diffusion_pytorch_model.safetensors")
    head = "classifier.weight"
    assert torch.equal(saved[head], ema[head]) and not torch.equal(saved[head], raw[head])
    assert not torch.equal(ema_1[head], ema[head])  # the EMA follows the training


def test_finetune_loop_steps_and_evaluates_the_ema(fresh_accelerate_state, one_thread):
    """diffusers' EMA takes the weights of the first update as they are, then, at decay 1, stays there: every later
    evaluation must score those weights, while the model itself trains on and keeps its own weights after the loop."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from diffusers_lmd import LMDForImageClassification, LMDModel
    from diffusers_lmd.classification import evaluate_accuracy, finetune
    from diffusers_lmd.data import TensorDictDataset

    torch.manual_seed(0)
    model = LMDForImageClassification.from_lmd_model(LMDModel.from_preset("tiny", sample_size=4, in_channels=4), 3)
    data = TensorDictDataset(latents=torch.randn(16, 4, 4, 4), labels=torch.arange(16) % 3)
    frozen = EMAModel(model.parameters(), decay=1.0, min_decay=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    accelerator = Accelerator(cpu=True)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    records = finetune(
        accelerator, model, optimizer, scheduler, loader, loader, max_train_steps=4, eval_steps=2, ema=frozen,
        show_progress=False,
    )  # fmt: skip
    assert [r["step"] for r in records] == [0, 2, 4] and frozen.optimization_step == 4
    assert records[1]["eval_loss"] == records[2]["eval_loss"] != records[0]["eval_loss"]  # the EMA after step 1
    trained = evaluate_accuracy(model, loader, accelerator)["eval_loss"]  # the raw weights are back after the loop
    assert trained != records[2]["eval_loss"]
    with ema_weights(frozen, model):
        assert evaluate_accuracy(model, loader, accelerator)["eval_loss"] == records[2]["eval_loss"]
    assert evaluate_accuracy(model, loader, accelerator)["eval_loss"] == trained
