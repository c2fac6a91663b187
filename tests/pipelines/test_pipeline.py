"""LMDPipeline / LMDInpaintPipeline behaviour: the three tasks, determinism, batching, outputs, callbacks, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_lmd import LMDInpaintPipeline, LMDPipelineOutput, decode_latents, encode_images
from diffusers_lmd.masking import num_masked_tokens, token_mask_to_latent_mask

NUM_TOKENS = 16  # 16 px images, 4 px per token


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def photo(batch: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1], ``B x 3 x size x size``."""
    g = gen(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def latent_visible(mask: torch.Tensor) -> torch.Tensor:
    """``B x 1 x 8 x 8`` bool: latent cells of visible tokens."""
    return token_mask_to_latent_mask(1 - mask, 2, 8, 8) > 0


@pytest.mark.parametrize("projector", ["vq", "kl"])
def test_reconstruction_keeps_visible_latents_and_predicts_masked(make_pipeline, projector):
    pipe = make_pipeline(projector=projector)
    image = photo()
    out = pipe(image=image, mask_ratio=0.75, generator=gen(0), output_type="latent")
    encoded = encode_images(pipe.vae, pipe.prepare_image(image)[0])
    visible = latent_visible(out.mask).expand_as(encoded)

    assert out.mask.shape == (1, NUM_TOKENS)
    assert int(out.mask.sum()) == num_masked_tokens(NUM_TOKENS, 0.75)
    assert torch.equal(out.images[visible], encoded[visible])
    assert not torch.allclose(out.images[~visible], encoded[~visible])
    assert out.image_size == (16, 16)


def test_mask_ratio_zero_is_the_projectors_own_reconstruction(make_pipeline):
    pipe = make_pipeline()
    image = photo(batch=2)
    out = pipe(image=image, mask_ratio=0.0, output_type="pt")
    expected = pipe.image_processor.postprocess(decode_latents(pipe.vae, encode_images(pipe.vae, image * 2 - 1)), "pt")
    assert out.mask.sum() == 0
    assert torch.equal(out.images, expected)


def test_default_mask_ratio_is_mae_075(make_pipeline):
    out = make_pipeline()(image=photo(), generator=gen(0), output_type="latent")
    assert int(out.mask.sum()) == num_masked_tokens(NUM_TOKENS, 0.75)


def test_same_generator_same_output_and_seeds_differ(make_pipeline):
    pipe = make_pipeline()
    a = pipe(image=photo(), generator=gen(3), output_type="np")
    b = pipe(image=photo(), generator=gen(3), output_type="np")
    c = pipe(image=photo(), generator=gen(4), output_type="np")
    assert np.array_equal(a.images, b.images) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)


def test_dict_and_tuple_outputs_agree(make_pipeline):
    pipe = make_pipeline()
    out = pipe(image=photo(), generator=gen(0), output_type="np")
    images, mask, size = pipe(image=photo(), generator=gen(0), output_type="np", return_dict=False)
    assert isinstance(out, LMDPipelineOutput)
    assert np.array_equal(out.images, images) and torch.equal(out.mask, mask) and out.image_size == size


@pytest.mark.parametrize("task", ["reconstruction", "generation"])
def test_batch_equals_single_runs(make_pipeline, task):
    pipe = make_pipeline()
    if task == "reconstruction":
        images = photo(batch=3)
        batch = pipe(image=images, generator=[gen(i) for i in range(3)], output_type="pt")
        singles = [pipe(image=images[i : i + 1], generator=gen(i), output_type="pt") for i in range(3)]
    else:
        batch = pipe(batch_size=3, num_inference_steps=3, generator=[gen(i) for i in range(3)], output_type="pt")
        singles = [pipe(batch_size=1, num_inference_steps=3, generator=gen(i), output_type="pt") for i in range(3)]
    assert torch.equal(batch.mask, torch.cat([s.mask for s in singles]))
    torch.testing.assert_close(batch.images, torch.cat([s.images for s in singles]), atol=1e-5, rtol=0)


def test_output_types_agree(make_pipeline):
    pipe = make_pipeline()
    pt, np_images, pil, latents = (
        pipe(image=photo(batch=2), generator=gen(0), output_type=kind).images for kind in ("pt", "np", "pil", "latent")
    )
    assert pt.shape == (2, 3, 16, 16) and np_images.shape == (2, 16, 16, 3) and latents.shape == (2, 4, 8, 8)
    np.testing.assert_array_equal(pt.permute(0, 2, 3, 1).numpy(), np_images)
    assert len(pil) == 2 and pil[0].size == (16, 16) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[1]), (np_images[1] * 255).round().astype(np.uint8))
    decoded = pipe.image_processor.postprocess(decode_latents(pipe.vae, latents), "pt")
    assert torch.equal(decoded, pt)


def test_inpainting_masks_touched_patches_and_keeps_the_rest(make_pipeline):
    pipe = make_pipeline()
    image = photo()
    mask_image = np.zeros((16, 16), dtype=np.float32)
    mask_image[0:3, 0:3] = 1.0  # inside token (0, 0)
    mask_image[5, 9] = 1.0  # one pixel of token (1, 2)
    out = pipe(image=image, mask_image=mask_image, output_type="latent")

    expected = torch.zeros(1, NUM_TOKENS)
    expected[0, [0, 1 * 4 + 2]] = 1.0
    assert torch.equal(out.mask, expected)
    encoded = encode_images(pipe.vae, pipe.prepare_image(image)[0])
    visible = latent_visible(out.mask).expand_as(encoded)
    assert torch.equal(out.images[visible], encoded[visible])
    assert not torch.allclose(out.images[~visible], encoded[~visible])

    inpaint = LMDInpaintPipeline.from_pipe(pipe)
    same = inpaint(image=image, mask_image=mask_image, output_type="latent")
    assert torch.equal(same.images, out.images) and torch.equal(same.mask, out.mask)


def test_inpainting_mask_formats_and_one_mask_for_a_batch(make_pipeline):
    pipe = make_pipeline(cls=LMDInpaintPipeline)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[12:, 12:] = 255  # white = redo: the last token
    from PIL import Image

    for mask_image in (mask, Image.fromarray(mask), torch.from_numpy(mask).float()[None] / 255):
        out = pipe(image=photo(batch=2), mask_image=mask_image, output_type="latent")
        assert out.mask.shape == (2, NUM_TOKENS)
        assert out.mask.sum(dim=1).tolist() == [1.0, 1.0] and out.mask[:, -1].tolist() == [1.0, 1.0]


def test_generation_reveals_every_token_and_never_changes_revealed_ones(make_pipeline):
    pipe = make_pipeline()
    seen = []

    def record(pipe, step, timestep, kwargs):
        seen.append({k: v.clone() for k, v in kwargs.items()})
        return {}

    out = pipe(
        batch_size=2,
        num_inference_steps=4,
        generator=gen(0),
        output_type="latent",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["latents", "mask"],
    )
    counts = [int(s["mask"][0].sum()) for s in seen]
    assert len(seen) == 4 and counts[-1] == 0 and counts == sorted(counts, reverse=True) and counts[0] < NUM_TOKENS
    assert torch.equal(out.mask, torch.ones(2, NUM_TOKENS))
    for before, after in zip(seen, seen[1:]):
        revealed = latent_visible(before["mask"]).expand_as(before["latents"])
        assert torch.equal(after["latents"][revealed], before["latents"][revealed])
    assert torch.equal(out.images, seen[-1]["latents"])
    assert pipe(batch_size=1, output_type="pt").images.shape == (1, 3, 16, 16)


def test_callback_can_replace_latents_and_mask(make_pipeline):
    pipe = make_pipeline()

    def zero_at_last_step(pipe, step, timestep, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 2 else {}

    out = pipe(batch_size=1, num_inference_steps=3, output_type="latent", callback_on_step_end=zero_at_last_step)
    assert torch.equal(out.images, torch.zeros(1, 4, 8, 8))

    masks = []

    def reveal_all_at_first_step(pipe, step, timestep, kwargs):
        masks.append(kwargs["mask"].clone())
        return {"mask": torch.zeros_like(kwargs["mask"])} if step == 0 else {}

    pipe(
        batch_size=1,
        num_inference_steps=3,
        output_type="latent",
        callback_on_step_end=reveal_all_at_first_step,
        callback_on_step_end_tensor_inputs=["mask"],
    )
    assert masks[0].sum() > 0 and masks[1].sum() == 0 and masks[2].sum() == 0


def test_components_round_trip(make_pipeline):
    pipe = make_pipeline()
    # The conditioning and diffusion-head components are optional: None for an unconditional MSE model.
    assert set(pipe.components) == {"vae", "transformer", "scheduler", "tokenizer", "text_encoder", "head_scheduler"}
    assert {name for name, component in pipe.components.items() if component is not None} == {
        "vae",
        "transformer",
        "scheduler",
    }
    rebuilt = LMDInpaintPipeline(**pipe.components)
    shared = LMDInpaintPipeline.from_pipe(pipe)
    for name, component in pipe.components.items():
        assert rebuilt.components[name] is component and shared.components[name] is component
    mask = np.ones((16, 16), dtype=np.float32)
    a = rebuilt(image=photo(), mask_image=mask, output_type="latent").images
    b = pipe(image=photo(), mask_image=mask, output_type="latent").images
    assert torch.equal(a, b)


def test_to_dtype(make_pipeline):
    pipe = make_pipeline()
    reference = pipe(image=photo(), generator=gen(0), output_type="pt").images
    pipe.to(torch.float64)
    assert pipe.vae.dtype == pipe.transformer.dtype == torch.float64
    double = pipe(image=photo(), generator=gen(0), output_type="pt").images
    torch.testing.assert_close(double.float(), reference, atol=1e-5, rtol=0)
    pipe.to(dtype=torch.bfloat16)
    latents = pipe(image=photo(), generator=gen(0), output_type="latent").images
    assert latents.dtype == torch.bfloat16 and torch.isfinite(latents.float()).all()


def test_model_cpu_offload_gives_the_same_output(make_pipeline):
    pipe = make_pipeline()
    assert set(pipe.model_cpu_offload_seq.split("->")) == {"text_encoder", "vae", "transformer"}
    reference = pipe(image=photo(), generator=gen(0), output_type="pt").images
    pipe.enable_model_cpu_offload(device="cpu")  # the hook machinery, exercised without an accelerator
    assert torch.equal(pipe(image=photo(), generator=gen(0), output_type="pt").images, reference)


def test_a_bf16_transformer_keeps_the_fp32_projectors_latents_exact(make_pipeline):
    pipe = make_pipeline()
    pipe.transformer.to(torch.bfloat16)  # the fast transformer beside a projector that stays in fp32
    image = photo()
    encoded = encode_images(pipe.vae, pipe.prepare_image(image)[0])
    out = pipe(image=image, mask_ratio=0.75, generator=gen(0), output_type="latent")
    visible = latent_visible(out.mask).expand_as(encoded)
    assert out.images.dtype == torch.float32 and torch.equal(out.images[visible], encoded[visible])
    projector = pipe.image_processor.postprocess(decode_latents(pipe.vae, encoded), output_type="pt")
    assert torch.equal(pipe(image=image, mask_ratio=0.0, output_type="pt").images, projector)
    generated = pipe(batch_size=1, num_inference_steps=2, generator=gen(0), output_type="latent").images
    assert generated.dtype == torch.float32 and torch.isfinite(generated).all()


def test_a_callback_can_interrupt_and_the_pipeline_reports_its_steps(make_pipeline):
    pipe = make_pipeline()
    seen, after_two = [], {}

    def interrupt_after_two(p, i, t, kwargs):
        seen.append((i, p.num_timesteps, p.interrupt))
        p._interrupt = i == 1
        return kwargs

    def record(p, i, t, kwargs):
        after_two.update(kwargs if i == 1 else {})
        return kwargs

    out = pipe(batch_size=2, num_inference_steps=5, generator=gen(0), output_type="latent",
               callback_on_step_end=interrupt_after_two)  # fmt: skip
    assert seen == [(0, 5, False), (1, 5, False)] and pipe.interrupt
    full = pipe(
        batch_size=2, num_inference_steps=5, generator=gen(0), output_type="latent", callback_on_step_end=record
    )
    assert not pipe.interrupt and pipe.num_timesteps == 5 and not torch.equal(full.images, after_two["latents"])
    assert torch.equal(out.images, after_two["latents"])  # stopped after the second of five steps


def test_model_cpu_offload_moves_the_transformer_off_before_the_projector_decodes(make_pipeline, monkeypatch):
    from accelerate.hooks import CpuOffload

    pipe = make_pipeline()
    pipe.enable_model_cpu_offload(device="cpu")  # on a GPU, a hook's pre_forward offloads its previous module
    names = {id(m): n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    events, pre_forward = [], CpuOffload.pre_forward

    def spy(self, module, *args, **kwargs):
        previous = self.prev_module_hook.model if self.prev_module_hook is not None else None
        events.append(f"{names[id(module)]} onloaded, offloading {names.get(id(previous))}")
        return pre_forward(self, module, *args, **kwargs)

    monkeypatch.setattr(CpuOffload, "pre_forward", spy)
    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda *a, **k: events.append("decode") or decode(*a, **k))
    pipe(image=photo(), generator=gen(0), output_type="pt")
    assert pipe.model_cpu_offload_seq == "text_encoder->transformer->vae"  # diffusers' image-to-image order
    last_transformer, decoded = (
        max(i for i, e in enumerate(events) if e.startswith("transformer")),
        events.index("decode"),
    )
    assert "vae onloaded, offloading transformer" in events[last_transformer + 1 : decoded], events


def test_inpainting_redoes_pixels_from_one_half_up_as_diffusers_binarises(make_pipeline):
    pipe = make_pipeline(LMDInpaintPipeline)
    mask = np.zeros((16, 16), np.float32)
    mask[0, 0] = 0.5  # token 0: exactly one half is white
    mask[0, 5] = 0.499  # token 1: just below
    out = pipe(image=photo(), mask_image=mask, output_type="latent")
    assert out.mask[0].tolist() == [1.0] + [0.0] * (NUM_TOKENS - 1)
