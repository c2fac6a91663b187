"""LMDPipeline with a categorical head (MaskGIT-style sampling over a VQModel's codes): reproducible draws, batches
that repeat single-image calls, the confidence-ordered reveal, a saved codebook, and the arguments it refuses."""

from __future__ import annotations

import pytest
import torch
from testing_utils import gen, latents_of, make_generation_pipeline

from diffusers_lmd import LMDMaskScheduler, LMDModel, LMDPipeline
from diffusers_lmd.projector import encode_images, nearest_codes, vq_codebook

pytestmark = pytest.mark.usefixtures("one_thread")
K = 16  # the tiny VQModel's codes


@pytest.fixture
def pipe(make_pipeline_components):
    pipe = make_generation_pipeline(
        make_pipeline_components(), num_class_embeds=3, head_type="categorical", codebook_size=K
    )
    torch.nn.init.normal_(pipe.transformer.decoder_logits.weight, std=0.5)  # logits that differ between codes
    return pipe


def is_quantised(latents: torch.Tensor, codebook: torch.Tensor) -> bool:
    return torch.equal(codebook[nearest_codes(latents, codebook)].permute(0, 3, 1, 2).to(latents.dtype), latents)


def test_the_pipeline_takes_the_projectors_codebook_and_generates_codes(pipe):
    assert torch.equal(pipe.transformer.codebook, vq_codebook(pipe.vae))
    out = latents_of(pipe, batch_size=2, num_inference_steps=4, generator=gen(0))
    assert out.shape == (2, 4, 8, 8) and is_quantised(out, pipe.transformer.codebook)
    images = pipe(batch_size=2, num_inference_steps=4, generator=gen(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3)


def test_samples_reproduce_with_a_generator_and_differ_by_seed(pipe):
    kwargs = dict(class_labels=[0, 2], num_inference_steps=3, guidance_scale=2.0)
    a, b = latents_of(pipe, generator=gen(0), **kwargs), latents_of(pipe, generator=gen(0), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, latents_of(pipe, generator=gen(1), **kwargs))
    assert not torch.equal(a, latents_of(pipe, generator=gen(0), temperature=0.5, **{**kwargs, "guidance_scale": 1}))


def test_a_batch_with_one_generator_per_image_repeats_single_image_calls(pipe):
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0, choice_temperature=2.0)
    batch = latents_of(pipe, class_labels=[0, 1, 2], generator=[gen(5), gen(6), gen(7)], **kwargs)
    singles = [latents_of(pipe, class_labels=[c], generator=gen(5 + c), **kwargs) for c in range(3)]
    assert torch.equal(batch, torch.cat(singles))


def test_visible_tokens_never_change_and_the_rest_become_codes(pipe):
    image = torch.rand(1, 3, 16, 16, generator=gen(3))
    out = pipe(image=image, mask_ratio=0.5, num_inference_steps=2, generator=gen(1), output_type="latent")
    encoded = encode_images(pipe.vae, image * 2 - 1)
    visible = (1 - out.mask).bool().reshape(1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert out.mask.sum() == 8
    torch.testing.assert_close(out.images[visible.expand_as(encoded)], encoded[visible.expand_as(encoded)])
    masked = out.images.masked_select(~visible).view(1, 4, -1, 1)
    assert is_quantised(masked, pipe.transformer.codebook)


def test_the_reveal_keeps_the_least_confident_tokens_masked():
    scheduler = LMDMaskScheduler()
    scheduler.set_timesteps(4)
    mask = torch.tensor([[1.0, 1, 1, 1, 1, 1, 0, 0]])
    confidence = torch.tensor([[-0.1, -5.0, -0.2, -3.0, -0.3, -4.0, -9.0, -9.0]])
    t = scheduler.timesteps[0]
    expected = scheduler.reveal(t, mask, gen(0))  # the count kept masked, chosen at random
    kept = scheduler.reveal(t, mask, gen(0), confidence, choice_temperature=0.0)
    assert kept.sum() == expected.sum() == 5
    assert kept[0, 6:].sum() == 0  # visible tokens stay visible, however low their score
    assert kept[0, 0] == 0 and kept[0, [1, 3, 5]].sum() == 3  # the most confident is revealed first
    later = scheduler.reveal(scheduler.timesteps[2], mask, gen(0), confidence, choice_temperature=0.0)
    assert torch.equal(later, torch.tensor([[0.0, 1, 0, 1, 0, 1, 0, 0]]))  # floor(6 x 0.54) = 3 kept
    # Gumbel noise of scale choice_temperature * t / n makes the order random; it vanishes at the last step
    noisy = {
        tuple(scheduler.reveal(t, mask, gen(s), confidence, choice_temperature=50.0)[0].tolist()) for s in range(20)
    }
    assert len(noisy) > 1 and all(sum(row) == 5 for row in noisy)
    assert scheduler.reveal(scheduler.timesteps[-1], mask, gen(0), confidence, choice_temperature=50.0).sum() == 0


def test_the_codebook_and_samples_survive_save_and_load(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = LMDPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.transformer.config.head_type == "categorical"
    assert torch.equal(loaded.transformer.codebook, pipe.transformer.codebook)
    kwargs = dict(class_labels=[1, 2], num_inference_steps=3, guidance_scale=1.5)
    assert torch.equal(latents_of(pipe, generator=gen(2), **kwargs), latents_of(loaded, generator=gen(2), **kwargs))


def test_bad_inputs_are_refused_naming_the_argument(pipe, make_pipeline_components):
    categorical = LMDModel.from_preset(
        "tiny", sample_size=8, in_channels=4, patch_size=2, head_type="categorical", codebook_size=K
    )
    kl = make_pipeline_components(projector="kl")
    with pytest.raises(ValueError, match="head_type='categorical'.*VQModel"):
        LMDPipeline(**{**kl, "transformer": categorical})
    other = LMDModel.from_preset(
        "tiny", sample_size=8, in_channels=4, patch_size=2, head_type="categorical", codebook_size=8
    )
    with pytest.raises(ValueError, match="codebook_size=8"):
        LMDPipeline(**{**make_pipeline_components(), "transformer": other})
    categorical.set_codebook(torch.randn(K, 4))
    with pytest.raises(ValueError, match="not the projector's"):
        LMDPipeline(**{**make_pipeline_components(), "transformer": categorical})
    for kwargs, name in [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(choice_temperature=-1.0), "choice_temperature"),
        (dict(num_head_inference_steps=5), "num_head_inference_steps"),
        (dict(latents=torch.zeros(1, 4, 8, 8)), "latents"),
        (dict(class_labels=[3]), "class_labels"),
    ]:
        with pytest.raises(ValueError, match=name):
            pipe(batch_size=1, num_inference_steps=2, generator=gen(0), **kwargs)
    mse = make_generation_pipeline(make_pipeline_components())
    with pytest.raises(ValueError, match="choice_temperature"):
        mse(batch_size=1, num_inference_steps=2, choice_temperature=1.0)
