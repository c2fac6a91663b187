"""Held-out evaluation of a model with a sampling head: a model that also carries an MSE head is scored on that
head's mean (what a reconstruction is), one with only a diffusion head on sampled patches from a fixed seed."""

import torch
from conftest import tiny_pipeline_components

from diffusers_lmd import LMDModel, evaluate_reconstruction
from diffusers_lmd.masking import unpatchify
from diffusers_lmd.training.lmd.evaluation import UnconditionalPredictor, evaluation_model


class Images(torch.utils.data.Dataset):
    def __init__(self, count: int = 4):
        self.images = torch.rand(count, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.images[index]}


def tiny_model(**config) -> LMDModel:
    torch.manual_seed(0)
    model = LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2, **config).eval()
    if model.diffusion_head is not None:  # a head whose samples depend on the noise (its output starts at zero)
        torch.nn.init.normal_(model.diffusion_head.proj_out.weight, std=0.5)
    return model


def test_a_model_with_both_heads_is_evaluated_on_its_mse_heads_mean():
    model = tiny_model(head_type="diffusion", mse_loss_weight=1.0, num_class_embeds=3)
    evaluated = evaluation_model(model)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 16)
    mask[:, :12] = 1
    with torch.no_grad():
        prediction = evaluated(latents, mask=mask, return_dict=False, return_loss=False)[0]
        mean = unpatchify(model.decoder_pred(model.forward_features(latents, mask)), 2, 8, 8)  # the null class
    torch.testing.assert_close(prediction, mean)
    vae = tiny_pipeline_components()["vae"]
    first = evaluate_reconstruction(evaluated, vae, Images())
    sampled = evaluate_reconstruction(UnconditionalPredictor(tiny_model(head_type="diffusion")), vae, Images())
    assert first.per_image_psnr == evaluate_reconstruction(evaluation_model(model), vae, Images()).per_image_psnr
    assert first.per_image_psnr != sampled.per_image_psnr


def test_a_diffusion_only_model_is_evaluated_on_sampled_patches():
    model = tiny_model(head_type="diffusion")
    wrapped = evaluation_model(model)
    assert isinstance(wrapped, UnconditionalPredictor) and wrapped.head_scheduler is not None
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 16)
    with torch.no_grad():
        sampled, _, _ = wrapped(latents, mask)
        again, _, _ = wrapped(latents, mask)
    assert torch.equal(sampled, again)  # a fixed sampling seed: comparable between validation steps
    assert sampled.abs().sum() > 0
