"""LMD pipeline inputs: image formats and modes, resizing, and a ValueError naming each bad argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_lmd import LMDInpaintPipeline, LMDModel, LMDPipeline


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rgb_array(height: int = 16, width: int = 16) -> np.ndarray:
    """A ``H x W x 3`` uint8 image with no channel equal to another."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def latents_of(pipe, image, **kwargs) -> torch.Tensor:
    return pipe(image=image, mask_ratio=0.0, output_type="latent", **kwargs).images


def test_pil_numpy_tensor_and_uint8_inputs_agree(make_pipeline):
    pipe = make_pipeline()
    array = rgb_array()
    as_float = array.astype(np.float32) / 255
    reference = latents_of(pipe, Image.fromarray(array))
    for image in (array, as_float, torch.from_numpy(as_float).permute(2, 0, 1), [Image.fromarray(array)]):
        assert torch.equal(latents_of(pipe, image), reference)


def test_grayscale_inputs_become_rgb(make_pipeline):
    pipe = make_pipeline()
    gray = rgb_array()[..., 0]
    reference = latents_of(pipe, Image.fromarray(gray).convert("RGB"))
    for image in (Image.fromarray(gray), gray, gray[..., None], torch.from_numpy(gray)[None]):
        assert torch.equal(latents_of(pipe, image), reference)


def test_rgba_inputs_are_composited_on_white(make_pipeline):
    pipe = make_pipeline()
    rgba = np.concatenate([rgb_array(), np.full((16, 16, 1), 255, np.uint8)], axis=-1)
    rgba[:8, :, 3] = 0  # the top half is fully transparent: white
    white_top = rgb_array().copy()
    white_top[:8] = 255
    reference = latents_of(pipe, white_top)
    for image in (Image.fromarray(rgba, mode="RGBA"), rgba, torch.from_numpy(rgba).permute(2, 0, 1)):
        assert torch.equal(latents_of(pipe, image), reference)


def test_odd_sizes_keep_their_aspect_and_round_down_to_whole_tokens(make_pipeline, caplog):
    pipe = make_pipeline()
    out = pipe(image=Image.fromarray(rgb_array(30, 22)), generator=gen(), output_type="np")
    assert out.image_size == (28, 20) != pipe.default_image_size  # not squashed to the model's 16 x 16
    assert out.images.shape == (1, 28, 20, 3) and out.mask.shape == (1, 7 * 5)
    assert "resizing to 28x20" in caplog.text
    assert pipe(image=rgb_array(3, 30), generator=gen(), output_type="np").image_size == (4, 28)  # one token at least


def test_the_docs_chelsea_photo_keeps_its_aspect_ratio(make_pipeline):
    from skimage import data

    pipe = make_pipeline()
    photo = Image.fromarray(data.chelsea())  # docs/pipeline.md's example: 300 x 451
    out = pipe(image=photo, mask_ratio=0.75, generator=gen(), output_type="np")
    assert out.image_size == (300, 448) and out.images.shape == (1, 300, 448, 3)


def test_sizes_that_fit_are_kept_and_height_width_override(make_pipeline):
    pipe = make_pipeline()
    out = pipe(image=rgb_array(24, 32), generator=gen(), output_type="np")
    assert out.image_size == (24, 32) and out.images.shape == (1, 24, 32, 3) and out.mask.shape == (1, 6 * 8)
    out = pipe(image=rgb_array(24, 32), height=16, width=16, generator=gen(), output_type="np")
    assert out.image_size == (16, 16) and out.images.shape == (1, 16, 16, 3)
    out = pipe(batch_size=1, height=8, width=24, num_inference_steps=2, output_type="pt")
    assert out.image_size == (8, 24) and out.images.shape == (1, 3, 8, 24)


IMAGE = rgb_array()
BAD_CALLS = [
    (dict(image=IMAGE, mask_ratio=-0.1), "mask_ratio"),
    (dict(image=IMAGE, mask_ratio=1.5), "mask_ratio"),
    (dict(image=IMAGE, num_inference_steps=0), "num_inference_steps"),
    (dict(batch_size=2, num_inference_steps=0), "num_inference_steps"),
    (dict(image=IMAGE, mask_image=np.ones((8, 8), np.float32)), "same size"),
    (dict(), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(image=IMAGE, batch_size=2), "batch_size"),
    (dict(mask_image=np.ones((16, 16), np.float32)), "image"),
    (dict(image=IMAGE, mask_image=np.ones((16, 16), np.float32), mask_ratio=0.5), "not both"),
    (dict(image=IMAGE, output_type="jpeg"), "output_type"),
    (dict(image=IMAGE, height=16), "height"),
    (dict(image=IMAGE, height=18, width=16), "multiple of 4"),
    (dict(image=IMAGE, generator=[gen(0), gen(1)]), "generators"),
    (dict(image=IMAGE, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"]), "noise"),
    (dict(image=np.zeros((16, 16, 2), np.float32)), "channels"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_bad_inputs_raise_a_value_error_naming_the_problem(make_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pipeline()(**kwargs)


def test_projector_with_other_latent_channels_is_rejected(make_pipeline_components):
    components = make_pipeline_components()
    components["transformer"] = LMDModel.from_preset("tiny", sample_size=8, in_channels=3, patch_size=2)
    with pytest.raises(ValueError, match="latent"):
        LMDPipeline(**components)
    pipe = LMDPipeline(**make_pipeline_components())
    pipe.transformer = components["transformer"]  # swapped after construction: caught at call time
    with pytest.raises(ValueError, match="latent"):
        pipe(image=IMAGE)


def test_inpaint_pipeline_needs_a_mask(make_pipeline):
    with pytest.raises(ValueError, match="mask_image"):
        make_pipeline(cls=LMDInpaintPipeline)(image=IMAGE, mask_image=None)
    with pytest.raises(ValueError, match="one per image"):
        make_pipeline(cls=LMDInpaintPipeline)(image=[IMAGE] * 3, mask_image=np.ones((2, 16, 16), np.float32))
