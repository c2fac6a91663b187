"""train_lmd's flags as a diffusers user types them (issue 20 items 4-6): every default in --help, flags that would do
nothing refused before any work, diffusers' flag names accepted or refused with what to use, and a new run started
from the weights of a saved LMD pipeline or model."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest
import torch
from conftest import TINY_PROJECTOR
from diffusers import AutoencoderKL
from testing_utils import load_script, train

from diffusers_lmd import LMDModel
from diffusers_lmd.training import LMDTrainer, train_lmd
from diffusers_lmd.training.args import (
    HelpFormatter,
    build_lmd_parser,
    build_projector_parser,
    optimizer_config,
    parse_lmd_args,
)
from diffusers_lmd.training.args.evaluate import build_evaluate_fid_parser
from diffusers_lmd.training.optim import OptimizerConfig, build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
PROJECTOR = ["--projector_path", "unused"]  # parsing does not load it


def _parsers() -> dict[str, argparse.ArgumentParser]:
    finetune = load_script("finetune_classifier")
    parsers = {"train_lmd": build_lmd_parser(), "train_projector": build_projector_parser()}
    parsers["evaluate_fid"] = build_evaluate_fid_parser()
    captured = {}

    def capture(self, *args, **kwargs):  # the fine-tuning script builds its parser inside parse_args
        captured["parser"] = self
        raise SystemExit(0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(SystemExit):
            finetune.parse_args([])
    parsers["finetune_classifier"] = captured["parser"]
    return parsers


@pytest.mark.parametrize("script", ["train_lmd", "train_projector", "evaluate_fid", "finetune_classifier"])
def test_help_states_every_flags_default(script):
    parser = _parsers()[script]
    assert parser.formatter_class is HelpFormatter
    formatter = parser._get_formatter()
    optional = [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS and a.dest != "help"]
    assert optional and all("%(default)" in formatter._get_help_string(a) for a in optional)
    assert "(default: " in parser.format_help()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--optimizer", "adan", "--adam_beta1", "0.8"], "adan uses its paper's three betas"),
        (["--diffusion_head_width", "64"], "need --head_type diffusion"),
        (["--diffusion_batch_mul", "1"], "need --head_type diffusion"),
        (["--no-encoder_cross_attention"], "needs --caption_column"),
        (["--conditioning_dropout_prob", "0.2"], "needs --label_column or --caption_column"),
        (["--validation_epochs", "2"], "pass --validation_steps"),
        (["--sampling_temperature", "0.8"], "needs --head_type diffusion or categorical"),
        (["--head_type", "diffusion", "--sampling_temperature", "0"], "a value > 0"),
        (["--sampling_guidance_scale", "3"], "needs --label_column"),
        (["--use_8bit_adam", "--optimizer", "adan"], "needs --optimizer adamw"),
        (["--attention_backend", "native", "--enable_xformers_memory_efficient_attention"], "pass one of the two"),
        (["--pretrained_model_name_or_path", "x", "--hidden_size", "64"], "brings its own architecture"),
        (["--pretrained_model_name_or_path", "x", "--head_type", "mse"], "brings its own architecture"),
    ],
)
def test_flags_that_would_do_nothing_are_refused_at_parse_time(extra, message):
    with pytest.raises(ValueError, match=message):
        parse_lmd_args([*PROJECTOR, *extra])


@pytest.mark.parametrize(
    "package, flags",
    [
        ("wandb", ["--report_to", "wandb"]),
        ("bitsandbytes", ["--use_8bit_adam"]),
        ("xformers", ["--enable_xformers_memory_efficient_attention"]),
    ],
)
def test_flags_needing_a_missing_package_say_what_to_install(package, flags):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ValueError, match=package):
        parse_lmd_args([*PROJECTOR, *flags])


def test_an_unknown_tracker_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_lmd_args([*PROJECTOR, "--report_to", "bogus"])
    assert exit_info.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_diffusers_flag_names_are_accepted_where_they_mean_something():
    args = parse_lmd_args([*PROJECTOR, "--num_epochs", "3", "--logger", "none", "--local_rank", "0"])
    assert (args.num_train_epochs, args.report_to, args.local_rank) == (3, "none", 0)
    args = parse_lmd_args([*PROJECTOR, "--attention_backend", "native"])
    assert args.attention_backend == "native"
    assert not optimizer_config(args).use_8bit_adam


def test_defaults_resolve_only_where_they_apply():
    plain = parse_lmd_args(PROJECTOR)
    assert (plain.preset, plain.head_type, plain.conditioning_dropout_prob, plain.encoder_cross_attention) == (
        "small",
        "mse",
        None,
        None,
    )
    labelled = parse_lmd_args([*PROJECTOR, "--label_column", "label"])
    assert labelled.conditioning_dropout_prob == 0.1


def test_8bit_adam_without_bitsandbytes_names_the_package():
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(ImportError, match="bitsandbytes"):
        build_optimizer(torch.nn.Linear(2, 2), OptimizerConfig(use_8bit_adam=True), 1e-3)


# ------------------------------------------------------------------------------ --pretrained_model_name_or_path
def _from_pretrained_argv(pretrained: str, output_dir, cache_dir, *extra) -> list[str]:
    """tiny_argv's run without --projector_path and --preset: both come from the pretrained pipeline."""
    return [
        "--pretrained_model_name_or_path", pretrained, "--output_dir", str(output_dir), "--latent_cache_dir",
        str(cache_dir), "--resolution", "16", "--train_batch_size", "8", "--learning_rate", "1e-3",
        "--demo_crops_per_photo", "8", "--demo_eval_crops", "3", "--report_to", "none", "--validation_steps", "1000",
        *map(str, extra),
    ]  # fmt: skip


def _same(a: torch.nn.Module, b: torch.nn.Module, skip: str = "\0") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if not k.startswith(skip)]
    return all(torch.equal(sa[k], sb[k]) for k in keys) and len(keys) > 10


@pytest.fixture(scope="module")
def pretrained_run(tiny_projector_path, tmp_path_factory):
    """A tiny unconditional LMD pipeline saved by train_lmd, to start new runs from."""
    tmp_path = tmp_path_factory.mktemp("pretrained")
    train(tiny_projector_path, tmp_path, "--max_train_steps", 2, name="a")
    return tmp_path / "a"


def test_a_new_run_starts_from_a_saved_pipelines_transformer_and_projector(pretrained_run, tmp_path):
    trainer = LMDTrainer(parse_lmd_args(_from_pretrained_argv(str(pretrained_run), tmp_path / "b", tmp_path / "c")))
    saved = LMDModel.from_pretrained(pretrained_run / "transformer")
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert _same(model, saved) and model.config.hidden_size == saved.config.hidden_size
    assert json.loads((pretrained_run / "vae" / "config.json").read_text())["_class_name"] == type(trainer.vae).__name__
    assert trainer.global_step == 0  # a new run, not a resume


def test_new_labels_get_new_class_embeddings_and_keep_everything_else(pretrained_run, tmp_path, make_image_folder):
    folder = make_image_folder(tmp_path / "images")
    argv = _from_pretrained_argv(str(pretrained_run), tmp_path / "b", tmp_path / "c", "--train_data_dir", folder,
                                 "--label_column", "label", "--max_train_steps", 1)  # fmt: skip
    args = parse_lmd_args(argv)
    trainer = LMDTrainer(args)
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.config.num_class_embeds == 2 and model.class_embedding is not None
    assert _same(model, LMDModel.from_pretrained(pretrained_run / "transformer"), skip="class_embedding.")
    result = train_lmd(parse_lmd_args(argv))  # and it trains
    assert result.global_step == 1
    assert LMDModel.from_pretrained(tmp_path / "b" / "transformer").config.num_class_embeds == 2


def test_a_bare_transformer_needs_its_projector_and_a_mismatched_one_is_refused(pretrained_run, tmp_path):
    transformer = str(pretrained_run / "transformer")
    with pytest.raises(ValueError, match="without a projector: pass --projector_path"):
        LMDTrainer(parse_lmd_args(_from_pretrained_argv(transformer, tmp_path / "b", tmp_path / "c")))
    torch.manual_seed(0)
    AutoencoderKL(**{**TINY_PROJECTOR, "latent_channels": 2}).save_pretrained(tmp_path / "kl2")
    argv = _from_pretrained_argv(transformer, tmp_path / "b", tmp_path / "c", "--projector_path", tmp_path / "kl2")
    with pytest.raises(ValueError, match="--projector_path does not fit --pretrained_model_name_or_path"):
        LMDTrainer(parse_lmd_args(argv))


def test_the_wrong_resolution_for_the_pretrained_transformer_says_which_to_use(pretrained_run, tmp_path):
    argv = _from_pretrained_argv(str(pretrained_run), tmp_path / "b", tmp_path / "c")
    argv[argv.index("--resolution") + 1] = "32"
    with pytest.raises(ValueError, match="pass the --resolution it was trained at"):
        LMDTrainer(parse_lmd_args(argv))
