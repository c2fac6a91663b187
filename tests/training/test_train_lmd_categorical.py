"""train_lmd with --head_type categorical: the codebook comes from the VQModel projector (after the latent statistics
are estimated, in the space the model trains in), the saved pipeline samples, and a KL projector is refused first."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from testing_utils import tiny_argv, train

from diffusers_lmd import LMDPipeline
from diffusers_lmd.projector import vq_codebook
from diffusers_lmd.training import train_lmd
from diffusers_lmd.training.args import parse_lmd_args
from tests.conftest import TINY_PROJECTOR

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def test_a_categorical_run_trains_on_the_projectors_codes_and_saves_a_sampling_pipeline(tiny_projector_path, tmp_path):
    result, args = train(tiny_projector_path, tmp_path, "--head_type", "categorical", "--mse_loss_weight", 0.1,
                         "--max_train_steps", 2, "--estimate_latent_stats", "--validation_steps", 2,
                         "--sampling_temperature", 0.7)  # fmt: skip
    assert result.global_step == 2 and np.isfinite(result.eval.psnr)
    pipe = LMDPipeline.from_pretrained(args.output_dir)
    pipe.set_progress_bar_config(disable=True)
    model = pipe.transformer
    assert model.config.head_type == "categorical" and model.config.codebook_size == pipe.vae.config.num_vq_embeddings
    assert pipe.vae.config.scaling_factor != 1.0  # estimated, and the codebook follows the estimate
    torch.testing.assert_close(model.codebook, vq_codebook(pipe.vae))
    assert pipe.config.sampling_defaults == {"temperature": 0.7}  # --sampling_temperature: the pipeline's default
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 16, 16, 3)


def test_a_kl_projector_with_the_categorical_head_fails_before_training(tmp_path):
    torch.manual_seed(0)
    AutoencoderKL(**TINY_PROJECTOR).save_pretrained(tmp_path / "kl")
    argv = tiny_argv(str(tmp_path / "kl"), tmp_path / "out", tmp_path / "cache", "--head_type", "categorical")
    with pytest.raises(ValueError, match="--head_type categorical .*VQModel"):
        train_lmd(parse_lmd_args([*argv, "--max_train_steps", "2"]))
    assert not (tmp_path / "out").exists()
