"""training/demo.py: the built-in demo's outputs, on a tiny projector and a few steps."""

import importlib.util
import re
from pathlib import Path

import pytest
from PIL import Image

from diffusers_lmd import LMDPipeline
from diffusers_lmd.training.lmd_args import build_lmd_parser
from diffusers_lmd.training.lmd_setup import build_lmd_model, load_projector

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def load_demo():
    spec = importlib.util.spec_from_file_location("lmd_demo", REPO / "training" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_saves_a_pipeline_and_reconstructions_and_prints_psnr(tiny_projector_path, tmp_path, capsys):
    out = tmp_path / "demo-output"
    load_demo().main(["--projector_path", tiny_projector_path, "--output_dir", str(out), "--preset", "tiny",
                      "--max_train_steps", "3", "--demo_crops_per_photo", "4", "--demo_eval_crops", "2",
                      "--train_batch_size", "4"])  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(r"held-out PSNR: \d+\.\d\d dB", printed), printed
    assert (out / "model_index.json").is_file()
    grid = Image.open(out / "reconstructions.png")
    assert grid.size == (3 * 16, 3 * 16)  # the 16 px projector's resolution; 3 held-out images, 3 rows
    assert (out / "latent_cache").is_dir()  # the demo keeps its cache beside its outputs
    assert LMDPipeline.from_pretrained(out).transformer.config.sample_size == 8


def test_the_committed_demo_projector_fits_the_demo_model():
    demo = load_demo()
    path = demo.DEMO_DEFAULTS["projector_path"]
    args = build_lmd_parser().parse_args(["--projector_path", path, "--preset", demo.DEMO_DEFAULTS["preset"]])
    args.resolution = demo.projector_resolution(path)
    vae = load_projector(path)
    model = build_lmd_model(args, vae)  # raises if the latents do not fit the model
    assert args.resolution == 64 and model.config.sample_size == 16 and model.config.in_channels == 4
    assert vae.config.scaling_factor != 0.18215  # its own latent statistics, not diffusers' SD default
