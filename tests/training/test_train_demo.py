"""training/demo.py: the Fashion-MNIST demo's outputs, on a tiny projector, fake IDX files and a few steps."""

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from testing_utils import fake_fashion_mnist, load_script

from diffusers_lmd import LMDPipeline
from diffusers_lmd.metrics.feature_classifier import FeatureClassifier
from diffusers_lmd.training import load_projector
from diffusers_lmd.training.args import build_lmd_parser, demo_defaults, lmd_model_kwargs
from diffusers_lmd.training.demo_report import FIGURES, one_per_class, with_row_labels
from diffusers_lmd.training.lmd import build_lmd_model

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


@pytest.mark.slow
def test_demo_trains_saves_a_loadable_pipeline_and_reports_scores_and_figures(tiny_projector_path, tmp_path, capsys):
    data = fake_fashion_mnist(tmp_path / "idx", num_train=40, num_test=30, balanced=True)
    torch.manual_seed(0)
    classifier = tmp_path / "classifier"
    FeatureClassifier(sample_size=16, block_channels=(4, 8), feature_dim=8).save_pretrained(classifier)
    out, figures = tmp_path / "demo-output", tmp_path / "figures"
    argv = ["--projector_path", tiny_projector_path, "--train_data_dir", data, "--resolution", "16", "--output_dir",
            str(out), "--preset", "tiny", "--hidden_size", "32", "--num_layers", "1", "--num_attention_heads", "2",
            "--decoder_hidden_size", "32", "--decoder_num_layers", "1", "--decoder_num_attention_heads", "2",
            "--max_train_steps", "3", "--train_batch_size", "8", "--max_eval_samples", "30", "--classifier_path",
            str(classifier), "--accuracy_samples_per_class", "1", "--figures_dir", str(figures)]  # fmt: skip
    scores = load_script("demo").main(argv)
    printed = capsys.readouterr().out
    assert re.search(r"held-out PSNR: \d+\.\d\d dB", printed) and "visible mean colour" in printed, printed
    assert re.search(r"conditional accuracy of 10 generated samples: \d+\.\d%", printed), printed
    assert re.search(r"their FID on that classifier's features against the held-out images: \d+\.\d\d", printed)
    pipe = LMDPipeline.from_pretrained(out)  # the saved folder loads, class-conditional, with the class names
    assert pipe.transformer.config.num_class_embeds == 10 and pipe.config.id2label["9"] == "Ankle boot"
    # both heads: the diffusion head samples by default, the MSE head's mean is there for reconstruction
    assert pipe.transformer.diffusion_head is not None and pipe.transformer.decoder_pred is not None
    assert pipe.config.sampling_defaults == {"temperature": 0.7}
    saved = json.loads((out / "demo_scores.json").read_text())
    for key in ("heldout_psnr", "mean_pixel", "mean_latent", "projector", "conditional_accuracy", "fid", "train_s"):
        assert key in saved and saved[key] == scores[key]
    assert 0.0 <= saved["conditional_accuracy"] <= 1.0 and saved["num_eval_images"] == 30
    assert saved["fid"] >= 0.0 and 0.0 <= saved["precision"] <= 1.0 and 0.0 <= saved["recall"] <= 1.0
    assert all(10.0 < saved[key] < 60.0 for key in ("heldout_psnr", "mean_pixel", "mean_latent", "projector"))
    reconstruction = Image.open(out / FIGURES["reconstruction"])
    assert reconstruction.size == (3 * 32 + 2 * 2, 10 * 32 + 9 * 2)  # one test image per class, 3 columns, x2
    generation = Image.open(out / FIGURES["generation"])
    assert generation.height == 10 * 32 + 9 * 2 and generation.width > 8 * 32  # 10 labelled rows of 8 samples
    for name in ("demo_reconstruction.png", "demo_inpainting.png", "demo_generation.png", "demo_loss_curve.png"):
        assert (figures / name).is_file()  # what the README shows, refreshed by --figures_dir
    assert (out / "latent_cache").is_dir()  # the demo keeps its cache beside its outputs


def test_the_committed_fashion_mnist_projector_fits_the_demo_model():
    defaults = demo_defaults(REPO)  # what training/demo.py sets
    path = defaults["projector_path"]
    parser = build_lmd_parser()
    parser.set_defaults(**defaults)
    args = parser.parse_args([])
    model = build_lmd_model(load_projector(path), **lmd_model_kwargs(args))  # raises if the latents do not fit it
    assert model.config.sample_size == 16 and model.config.in_channels == 4
    assert model.num_tokens(16, 16) == 64  # as many tokens as a pixel MAE with patch 4 on the 32x32 images
    assert (REPO / "assets" / "fashion-mnist-classifier" / "config.json").is_file()


def test_one_image_per_class_and_labelled_rows():
    dataset = [{"class_labels": label} for label in (2, 0, 2, 1, 0)]
    assert one_per_class(dataset, 3) == [1, 3, 0]
    with pytest.raises(ValueError, match="no image of classes \\[3\\]"):
        one_per_class(dataset, 4)
    grid = Image.new("RGB", (20, 2 * 10 + 2), "red")
    labelled = with_row_labels(grid, ["Coat", "Ankle boot"], row_height=10)
    assert labelled.height == grid.height and labelled.width > grid.width
    assert labelled.getpixel((labelled.width - 1, 0)) == (255, 0, 0)  # the grid itself is unchanged, at the right
