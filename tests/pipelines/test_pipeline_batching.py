"""``num_images_per_prompt`` and ``latents`` of LMDPipeline (issue 20 item 8): several outputs per class label,
prompt or input image, grouped per condition as in diffusers, and the diffusion head's starting noise."""

from __future__ import annotations

import pytest
import torch
from testing_utils import gen, latents_of, make_generation_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def gens(n: int) -> list[torch.Generator]:
    return [gen(i) for i in range(n)]


@pytest.fixture
def diffusion_pipe(make_pipeline_components):
    return make_generation_pipeline(make_pipeline_components(), num_class_embeds=3, head_type="diffusion")


def test_num_images_per_prompt_groups_outputs_per_class_label(diffusion_pipe):
    kwargs = dict(num_inference_steps=2, num_head_inference_steps=4, guidance_scale=2.0)
    grouped = latents_of(diffusion_pipe, class_labels=[1, 2], num_images_per_prompt=2, generator=gens(4), **kwargs)
    spelled = latents_of(diffusion_pipe, class_labels=[1, 1, 2, 2], generator=gens(4), **kwargs)
    assert grouped.shape == (4, 4, 8, 8) and torch.equal(grouped, spelled)
    one_label = latents_of(diffusion_pipe, class_labels=2, num_images_per_prompt=3, generator=gen(0), **kwargs)
    assert one_label.shape[0] == 3 and not torch.allclose(one_label[0], one_label[1])  # each image its own sample


def test_num_images_per_prompt_groups_outputs_per_prompt(make_pipeline_components):
    pipe = make_generation_pipeline(make_pipeline_components(), text=True)
    kwargs = dict(num_inference_steps=2, guidance_scale=2.0)
    grouped = latents_of(pipe, prompt=["a bag", "a shoe"], num_images_per_prompt=2, generator=gens(4), **kwargs)
    spelled = latents_of(pipe, prompt=["a bag", "a bag", "a shoe", "a shoe"], generator=gens(4), **kwargs)
    torch.testing.assert_close(grouped, spelled)


def test_num_images_per_prompt_multiplies_unconditional_and_image_batches(make_pipeline):
    pipe = make_pipeline()
    assert latents_of(pipe, batch_size=2, num_images_per_prompt=3, num_inference_steps=2).shape[0] == 6
    images = torch.rand(2, 3, 16, 16, generator=gen(3))
    masks = torch.zeros(2, 16, 16)
    masks[0, :8], masks[1, 8:] = 1, 1
    out = pipe(image=images, mask_image=masks, num_images_per_prompt=2, generator=gens(4), output_type="latent")
    spelled = pipe(
        image=images.repeat_interleave(2, 0),
        mask_image=masks.repeat_interleave(2, 0),
        generator=gens(4),
        output_type="latent",
    )
    assert out.images.shape[0] == 4 and torch.equal(out.mask, spelled.mask)
    assert torch.equal(out.mask[0], out.mask[1]) and not torch.equal(out.mask[1], out.mask[2])  # each image's mask
    random = pipe(image=images[:1], num_images_per_prompt=3, generator=gen(0), output_type="latent")
    assert random.images.shape[0] == 3 and not torch.equal(random.mask[0], random.mask[1])  # its own mask each


def test_latents_are_the_diffusion_heads_starting_noise(diffusion_pipe):
    # One reveal step and one DDIM step (eta 1, to alpha 1): the samples depend on the starting noise alone.
    kwargs = dict(class_labels=[0, 1], num_inference_steps=1, num_head_inference_steps=1)
    noise = torch.randn(2, 4, 8, 8, generator=gen(7))
    a = latents_of(diffusion_pipe, latents=noise, generator=gen(0), **kwargs)
    assert torch.equal(a, latents_of(diffusion_pipe, latents=noise, generator=gen(1), **kwargs))
    assert not torch.allclose(a, latents_of(diffusion_pipe, latents=-noise, generator=gen(0), **kwargs))
    several = dict(kwargs, num_images_per_prompt=2, latents=noise.repeat_interleave(2, 0))
    grouped = latents_of(diffusion_pipe, generator=gen(0), **several)
    torch.testing.assert_close(grouped[::2], a)
    torch.testing.assert_close(grouped[1::2], a)
    # several steps: a batch with a list of generators still repeats single-image calls
    steps = dict(class_labels=[0, 1], num_inference_steps=3, num_head_inference_steps=4, latents=noise)
    batch = latents_of(diffusion_pipe, generator=gens(2), **steps)
    single = latents_of(diffusion_pipe, generator=gen(1), **{**steps, "class_labels": [1], "latents": noise[1:]})
    torch.testing.assert_close(batch[1:], single, rtol=1e-5, atol=1e-5)


def test_bad_num_images_per_prompt_and_latents_raise_naming_the_argument(diffusion_pipe, make_pipeline):
    with pytest.raises(ValueError, match="num_images_per_prompt must be an integer of at least 1"):
        diffusion_pipe(class_labels=[0], num_images_per_prompt=0)
    with pytest.raises(ValueError, match=r"latents must have shape \(4, 4, 8, 8\).*got \(2, 4, 8, 8\)"):
        diffusion_pipe(class_labels=[0, 1], num_images_per_prompt=2, latents=torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="latents is the diffusion head's starting noise.*head_type='mse'"):
        make_pipeline()(batch_size=1, latents=torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="Got a list of 2 generators for a batch of 4.*num_images_per_prompt"):
        diffusion_pipe(class_labels=[0, 1], num_images_per_prompt=2, generator=gens(2))
    with pytest.raises(ValueError, match="Got 2 masks for 3 images"):
        make_pipeline()(image=torch.rand(3, 3, 16, 16), mask_image=torch.ones(2, 16, 16), num_images_per_prompt=2)
