"""LMDPipeline generation with conditions (method.md §9): class labels and prompts, classifier-free guidance, the
diffusion head's sampling in generation, reconstruction and inpainting, save/load, and a ValueError for every bad
input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from testing_utils import gen, latents_of, make_generation_pipeline

from diffusers_lmd import LMDInpaintPipeline, LMDPipeline, encode_images
from diffusers_lmd.masking import token_mask_to_latent_mask
from diffusers_lmd.pipelines.text_inputs import encode_text

pytestmark = pytest.mark.usefixtures("one_thread")
HUB_FILE = Path(__file__).resolve().parents[2] / "pipelines" / "lmd_pipeline.py"
NAMES = {0: "T-shirt/top", 1: "Trouser", 2: "Bag"}


@pytest.fixture
def class_pipe(make_pipeline_components):
    return make_generation_pipeline(make_pipeline_components(), num_class_embeds=3, id2label=NAMES)


@pytest.fixture
def text_pipe(make_pipeline_components):
    return make_generation_pipeline(make_pipeline_components(), text=True)


@pytest.fixture
def diffusion_pipe(make_pipeline_components):
    return make_generation_pipeline(
        make_pipeline_components(), num_class_embeds=3, head_type="diffusion", id2label=NAMES
    )


# --------------------------------------------------------------------------------------------- guidance
def test_guidance_one_is_the_conditional_pass_and_no_label_is_the_null_class(class_pipe):
    one_step = dict(num_inference_steps=1)
    conditional = latents_of(class_pipe, class_labels=[2, 0], **one_step)
    expected = class_pipe.transformer(
        torch.zeros(2, 4, 8, 8), mask=torch.ones(2, 16), class_labels=torch.tensor([2, 0])
    ).sample
    torch.testing.assert_close(conditional, expected)
    unconditional = latents_of(class_pipe, batch_size=2, **one_step)
    null = class_pipe.transformer(torch.zeros(2, 4, 8, 8), mask=torch.ones(2, 16), class_labels=[3, 3]).sample
    torch.testing.assert_close(unconditional, null)
    guided = latents_of(class_pipe, class_labels=[2, 0], guidance_scale=2.5, **one_step)
    torch.testing.assert_close(guided, unconditional + 2.5 * (conditional - unconditional), rtol=1e-4, atol=1e-5)


def test_class_names_through_id2label_and_get_label_ids(class_pipe):
    assert class_pipe.labels == {"Bag": 2, "T-shirt/top": 0, "Trouser": 1}
    assert class_pipe.get_label_ids(["Trouser", "Bag"]) == [1, 2] and class_pipe.get_label_ids("Bag") == [2]
    by_name = latents_of(class_pipe, class_labels=["Bag", "Trouser"], num_inference_steps=2, generator=gen(0))
    by_id = latents_of(class_pipe, class_labels=torch.tensor([2, 1]), num_inference_steps=2, generator=gen(0))
    assert torch.equal(by_name, by_id)
    one_for_all = latents_of(class_pipe, class_labels=2, batch_size=2, num_inference_steps=1)
    assert torch.equal(one_for_all[0], one_for_all[1])


def test_the_empty_prompt_is_the_unconditional_branch_and_embeddings_equal_prompts(text_pipe):
    one_step = dict(num_inference_steps=1)
    prompts = ["a bag", "a shirt"]
    conditional = latents_of(text_pipe, prompt=prompts, **one_step)
    embeds, mask = encode_text(text_pipe.tokenizer, text_pipe.text_encoder, prompts)
    from_embeds = latents_of(text_pipe, prompt_embeds=embeds, prompt_attention_mask=mask, **one_step)
    torch.testing.assert_close(from_embeds, conditional)
    empty = latents_of(text_pipe, prompt=["", ""], **one_step)
    torch.testing.assert_close(latents_of(text_pipe, batch_size=2, **one_step), empty)
    guided = latents_of(text_pipe, prompt=prompts, guidance_scale=3.0, **one_step)
    torch.testing.assert_close(guided, empty + 3.0 * (conditional - empty), rtol=1e-4, atol=1e-5)
    negative = latents_of(text_pipe, prompt=prompts, negative_prompt="a trouser", guidance_scale=3.0, **one_step)
    assert not torch.allclose(negative, guided)
    assert not torch.allclose(conditional[0], conditional[1])


def test_a_text_pipeline_without_its_encoder_takes_embeddings(text_pipe):
    prompts = ["a bag"]
    embeds, mask = encode_text(text_pipe.tokenizer, text_pipe.text_encoder, prompts)
    null = encode_text(text_pipe.tokenizer, text_pipe.text_encoder, [""])
    expected = latents_of(text_pipe, prompt=prompts, guidance_scale=2.0, num_inference_steps=1)
    bare = LMDPipeline(vae=text_pipe.vae, transformer=text_pipe.transformer, scheduler=text_pipe.scheduler)
    bare.set_progress_bar_config(disable=True)
    got = latents_of(
        bare,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=null[0],
        negative_prompt_attention_mask=null[1],
        guidance_scale=2.0,
        num_inference_steps=1,
    )
    torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------------- the diffusion head
def test_diffusion_head_generation_differs_by_seed_repeats_and_batches_equal_singles(diffusion_pipe):
    kwargs = dict(class_labels=[0, 2], num_inference_steps=3, num_head_inference_steps=6, guidance_scale=2.0)
    a = latents_of(diffusion_pipe, generator=gen(0), **kwargs)
    assert torch.equal(a, latents_of(diffusion_pipe, generator=gen(0), **kwargs))
    assert not torch.allclose(a, latents_of(diffusion_pipe, generator=gen(1), **kwargs))
    batch = latents_of(diffusion_pipe, generator=[gen(5), gen(6)], **kwargs)
    for i, (label, seed) in enumerate([(0, 5), (2, 6)]):
        single = latents_of(diffusion_pipe, generator=gen(seed), **{**kwargs, "class_labels": [label]})
        torch.testing.assert_close(batch[i : i + 1], single, rtol=1e-5, atol=1e-5)
    diffusion_pipe.head_scheduler = DDPMScheduler.from_config(diffusion_pipe.head_scheduler.config)
    ddpm = latents_of(diffusion_pipe, generator=[gen(5), gen(6)], **kwargs)
    single = latents_of(diffusion_pipe, generator=gen(6), **{**kwargs, "class_labels": [2]})
    torch.testing.assert_close(ddpm[1:], single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ddpm, batch)


def test_diffusion_head_reconstruction_samples_masked_tokens_and_keeps_visible_ones(diffusion_pipe):
    image = torch.rand(1, 3, 16, 16, generator=gen(3))
    outs = [
        diffusion_pipe(image=image, mask_ratio=0.5, generator=gen(0), output_type="latent", num_head_inference_steps=5)
        for _ in range(2)
    ] + [
        diffusion_pipe(image=image, mask_ratio=0.5, generator=gen(1), output_type="latent", num_head_inference_steps=5)
    ]
    encoded = encode_images(diffusion_pipe.vae, diffusion_pipe.prepare_image(image)[0])
    visible = (token_mask_to_latent_mask(1 - outs[0].mask, 2, 8, 8) > 0).expand_as(encoded)
    assert torch.equal(outs[0].images[visible], encoded[visible])
    assert torch.equal(outs[0].images, outs[1].images)
    masked_a = outs[0].images[~visible]
    masked_b = outs[2].images[token_mask_to_latent_mask(outs[2].mask, 2, 8, 8).expand_as(encoded) > 0]
    assert not torch.allclose(masked_a.sort().values, masked_b.sort().values)  # sampled, not a fixed mean

    inpaint = LMDInpaintPipeline.from_pipe(diffusion_pipe)
    mask_image = torch.zeros(1, 16, 16)
    mask_image[:, :8] = 1
    a, b = (inpaint(image=image, mask_image=mask_image, generator=gen(s), output_type="latent") for s in (0, 1))
    keep = (token_mask_to_latent_mask(1 - a.mask, 2, 8, 8) > 0).expand_as(encoded)
    assert torch.equal(a.images[keep], encoded[keep]) and torch.equal(b.images[keep], encoded[keep])
    assert not torch.allclose(a.images[~keep], b.images[~keep])


def test_callback_sees_each_reveal_step_of_the_diffusion_head(diffusion_pipe):
    seen = []

    def record(pipe, step, timestep, kwargs):
        seen.append((step, int(kwargs["mask"].sum())))
        return {}

    diffusion_pipe(
        class_labels=[1],
        num_inference_steps=4,
        num_head_inference_steps=3,
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["mask"],
        output_type="latent",
    )
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    remaining = [m for _, m in seen]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0 and remaining[0] < 16


def test_model_cpu_offload_gives_the_same_diffusion_head_samples(diffusion_pipe):
    kwargs = dict(class_labels=[1], guidance_scale=2.0, num_inference_steps=2, num_head_inference_steps=4)
    reference = latents_of(diffusion_pipe, generator=gen(0), **kwargs)
    diffusion_pipe.enable_model_cpu_offload(device="cpu")  # the hook machinery, exercised without an accelerator
    assert torch.equal(latents_of(diffusion_pipe, generator=gen(0), **kwargs), reference)


# ----------------------------------------------------------------------------------------- save and load
def test_class_and_diffusion_pipelines_round_trip(diffusion_pipe, tmp_path):
    diffusion_pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["id2label"] == {"0": "T-shirt/top", "1": "Trouser", "2": "Bag"}
    assert index["head_scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["tokenizer"] == [None, None] and index["text_encoder"] == [None, None]
    assert not list(tmp_path.glob("**/*.bin"))
    loaded = LMDPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.labels == diffusion_pipe.labels
    kwargs = dict(class_labels=["Bag"], guidance_scale=2.0, num_inference_steps=2, num_head_inference_steps=4)
    np.testing.assert_allclose(
        latents_of(loaded, generator=gen(0), **kwargs),
        latents_of(diffusion_pipe, generator=gen(0), **kwargs),
        atol=1e-5,
    )


def test_text_pipeline_round_trips_with_its_tokenizer_and_text_encoder(text_pipe, tmp_path):
    text_pipe.save_pretrained(tmp_path)
    assert (tmp_path / "text_encoder" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "model_index.json").read_text())["tokenizer"] == ["transformers", "CLIPTokenizer"]
    loaded = LMDPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(prompt=["a bag"], guidance_scale=2.0, num_inference_steps=2, generator=gen(0))
    torch.testing.assert_close(latents_of(loaded, **kwargs), latents_of(text_pipe, **{**kwargs, "generator": gen(0)}))


def test_a_pipeline_saved_before_conditioning_existed_still_loads(make_pipeline, tmp_path):
    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    for key in ("tokenizer", "text_encoder", "head_scheduler", "id2label"):
        index.pop(key)
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    loaded = LMDPipeline.from_pretrained(tmp_path)
    assert loaded.tokenizer is None and loaded.head_scheduler is None and loaded.labels == {}
    loaded.set_progress_bar_config(disable=True)
    assert latents_of(loaded, batch_size=1, num_inference_steps=2, generator=gen(0)).shape == (1, 4, 8, 8)


@pytest.mark.slow
def test_custom_pipeline_route_generates_with_labels_and_guidance(diffusion_pipe, tmp_path):
    diffusion_pipe.save_pretrained(tmp_path / "pipe")
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import torch
        from diffusers import DiffusionPipeline

        assert "diffusers_lmd" not in sys.modules
        pipe = DiffusionPipeline.from_pretrained(sys.argv[1], custom_pipeline=sys.argv[2], trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(class_labels=["Bag"], guidance_scale=2.0, num_inference_steps=2, num_head_inference_steps=4,
                   generator=torch.Generator().manual_seed(0), output_type="latent")
        np.save(sys.argv[3], out.images.numpy())
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    import os

    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pipe"), str(HUB_FILE), str(tmp_path / "out.npy")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kwargs = dict(class_labels=["Bag"], guidance_scale=2.0, num_inference_steps=2, num_head_inference_steps=4)
    expected = latents_of(LMDPipeline.from_pretrained(tmp_path / "pipe"), generator=gen(0), **kwargs)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected.numpy(), atol=1e-6)


# --------------------------------------------------------------------------------------------- bad input
BAD_CLASS_CALLS = [
    (dict(class_labels=[3]), r"class_labels must be ids in \[0, 3\)"),
    (dict(class_labels=[-1]), r"class_labels must be ids in \[0, 3\)"),
    (dict(class_labels=["Sneaker"]), "'Sneaker' is not a class name"),
    (dict(class_labels=[0.5]), "class_labels must be ids"),
    (dict(class_labels=[0, 1], batch_size=3), "Got 2 class_labels for a batch of 3"),
    (dict(class_labels=[0], guidance_scale=0.5), "guidance_scale must be >= 1"),
    (dict(batch_size=1, guidance_scale=2.0), "needs a condition to guide towards"),
    (dict(class_labels=[0], prompt="a bag"), "prompt was given, but the transformer is not text-conditional"),
    (dict(class_labels=[0], temperature=0.5), "head_type='mse'"),
    (dict(class_labels=[0], num_head_inference_steps=5), "head_type='mse'"),
    (dict(class_labels=[0], temperature=0.0), "temperature must be > 0"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CLASS_CALLS, ids=[m[:30] for _, m in BAD_CLASS_CALLS])
def test_bad_class_inputs_raise_a_value_error_naming_the_argument(class_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        class_pipe(**kwargs)


def test_bad_inputs_to_unconditional_text_and_diffusion_pipelines(make_pipeline, text_pipe, diffusion_pipe):
    plain = make_pipeline()
    for kwargs, message in [
        (dict(class_labels=[0]), "not class-conditional"),
        (dict(batch_size=1, guidance_scale=2.0), "unconditional, so use guidance_scale=1"),
        (dict(prompt="a bag"), "not text-conditional"),
    ]:
        with pytest.raises(ValueError, match=message):
            plain(**kwargs)
    plain.labels = {}
    with pytest.raises(ValueError, match="no id2label"):
        plain.get_label_ids(["Bag"])

    wide = torch.randn(1, 12, 8)
    for kwargs, message in [
        (dict(prompt_embeds=wide), r"prompt_embeds must be batch x text tokens x 16"),
        (dict(prompt="a", negative_prompt_embeds=wide, guidance_scale=2.0), "negative_prompt_embeds must be"),
        (dict(prompt="a", prompt_embeds=torch.randn(1, 12, 16)), "either prompt or prompt_embeds"),
        (dict(prompt=[1, 2]), "prompt must be a string or a list of strings"),
        (dict(batch_size=1, prompt_attention_mask=torch.ones(1, 12)), "prompt_attention_mask goes with prompt_embeds"),
        (dict(prompt=["a", "b"], batch_size=3), "Got 2 prompt for a batch of 3"),
    ]:
        with pytest.raises(ValueError, match=message):
            text_pipe(**kwargs)
    bare = LMDPipeline(vae=text_pipe.vae, transformer=text_pipe.transformer, scheduler=text_pipe.scheduler)
    with pytest.raises(ValueError, match="no tokenizer and text_encoder"):
        bare(prompt="a bag")
    with pytest.raises(ValueError, match="no tokenizer and text_encoder"):
        bare(prompt_embeds=torch.randn(1, 12, 16), guidance_scale=2.0)
    with pytest.raises(ValueError, match="both tokenizer and text_encoder"):
        LMDPipeline(vae=text_pipe.vae, transformer=text_pipe.transformer, scheduler=text_pipe.scheduler,
                    tokenizer=text_pipe.tokenizer)  # fmt: skip

    for kwargs, message in [
        (dict(num_head_inference_steps=0), r"num_head_inference_steps must lie in \[1, 999\]"),
        (dict(num_head_inference_steps=1000), r"num_head_inference_steps must lie in \[1, 999\]"),
        (dict(temperature=-1.0), "temperature must be > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            diffusion_pipe(class_labels=[0], **kwargs)
    diffusion_pipe.head_scheduler = DDPMScheduler.from_config(diffusion_pipe.head_scheduler.config)
    with pytest.raises(ValueError, match="temperature=0.5 needs a head_scheduler that takes variance_noise"):
        diffusion_pipe(class_labels=[0], temperature=0.5)
    diffusion_pipe.head_scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    with pytest.raises(ValueError, match="does not use the diffusion head's training noise schedule"):
        diffusion_pipe(class_labels=[0])


# ------------------------------------------------------------------------------ a model that learned classes
@pytest.mark.slow
@pytest.mark.usefixtures("fresh_accelerate_state")
def test_class_conditional_generation_from_a_briefly_trained_model(tiny_projector_path, make_image_folder, tmp_path):
    """Two classes of images (red, blue) and a few hundred tiny steps: each class's samples are nearer its own images'
    latents than the other class's, for the MSE head and for the diffusion head. (Latents are normalised: the random
    projector maps both colours to nearly the same raw latent.)"""
    from diffusers_lmd.training import parse_lmd_args, train_lmd

    data = make_image_folder(tmp_path / "images", per_class=8)
    images = {name: sorted((tmp_path / "images" / name).glob("*.png")) for name in ("blue", "red")}
    for head, steps in (("mse", 150), ("diffusion", 400)):  # the diffusion loss needs longer to fit
        argv = [
            "--projector_path", tiny_projector_path, "--train_data_dir", data, "--output_dir", str(tmp_path / head),
            "--latent_cache_dir", str(tmp_path / "cache"), "--resolution", "16", "--preset", "tiny",
            "--train_batch_size", "8", "--learning_rate", "3e-3", "--max_train_steps", str(steps),
            "--report_to", "none", "--validation_steps", "1000", "--checkpointing_steps", "1000",
            "--eval_split_ratio", "0.1",
            "--label_column", "label", "--head_type", head, "--mask_schedule", "truncnorm",
            "--mask_ratio_min", "0.7", "--mask_ratio_max", "1.0", "--lr_warmup_steps", "10", "--estimate_latent_stats",
        ]  # fmt: skip
        train_lmd(parse_lmd_args(argv))
        pipe = LMDPipeline.from_pretrained(tmp_path / head)
        pipe.set_progress_bar_config(disable=True)
        means = {}
        for name, files in images.items():
            from PIL import Image

            pixels = pipe.prepare_image([Image.open(f) for f in files])[0]
            means[name] = encode_images(pipe.vae, pixels).mean(dim=0)
        for name in ("blue", "red"):
            samples = latents_of(
                pipe,
                class_labels=[name] * 4,
                num_inference_steps=4,
                generator=[gen(i) for i in range(4)],
            ).mean(dim=0)
            other = "red" if name == "blue" else "blue"
            own, cross = (samples - means[name]).norm(), (samples - means[other]).norm()
            assert own < 0.7 * cross, (head, name, own.item(), cross.item())


# ------------------------------------------------------------------------------- defaults and the head choice
def test_conditional_generation_is_guided_by_default_and_reconstruction_is_not(make_pipeline_components):
    """As DiTPipeline does: a class model trained with label dropout guides its generation unless told otherwise; a
    model whose null class never trained, a call without a condition, and a reconstruction do not."""
    from diffusers_lmd.pipelines.conditioning import DEFAULT_GUIDANCE_SCALE

    pipe = make_generation_pipeline(make_pipeline_components(), num_class_embeds=3, class_dropout_prob=0.1)
    default = latents_of(pipe, class_labels=[2, 0], num_inference_steps=1)
    assert pipe.guidance_scale == DEFAULT_GUIDANCE_SCALE > 1
    explicit = latents_of(pipe, class_labels=[2, 0], num_inference_steps=1, guidance_scale=DEFAULT_GUIDANCE_SCALE)
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, latents_of(pipe, class_labels=[2, 0], num_inference_steps=1, guidance_scale=1))
    latents_of(pipe, batch_size=2, num_inference_steps=1)
    assert pipe.guidance_scale == 1.0
    pipe(image=torch.rand(1, 3, 16, 16), class_labels=[1], generator=gen(0), output_type="latent")
    assert pipe.guidance_scale == 1.0
    no_dropout = make_generation_pipeline(make_pipeline_components(), num_class_embeds=3)
    latents_of(no_dropout, class_labels=[1], num_inference_steps=1)
    assert no_dropout.guidance_scale == 1.0


def test_a_model_with_both_heads_samples_by_default_and_gives_the_mean_when_asked(make_pipeline_components):
    """mse_loss_weight > 0 trains the MSE head beside the diffusion head: prediction='mean' is the MSE head's
    one-shot reconstruction, exactly the model's forward; the default samples (and differs by seed)."""
    pipe = make_generation_pipeline(
        make_pipeline_components(), num_class_embeds=3, head_type="diffusion", mse_loss_weight=1.0
    )
    image = torch.rand(1, 3, 16, 16)
    mean = pipe(image=image, prediction="mean", mask_ratio=1.0, generator=gen(0), output_type="latent").images
    expected = pipe.transformer(torch.zeros(1, 4, 8, 8), mask=torch.ones(1, 16), return_loss=False).sample
    torch.testing.assert_close(mean, expected)
    sampled = [
        pipe(image=image, mask_ratio=1.0, num_head_inference_steps=3, generator=gen(s), output_type="latent").images
        for s in (0, 1)
    ]
    assert not torch.allclose(sampled[0], sampled[1]) and not torch.allclose(sampled[0], mean)


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (dict(head_type="diffusion"), dict(prediction="mean"), "needs an MSE head"),
        (dict(), dict(prediction="sample"), "needs a sampling head"),
        (dict(), dict(prediction="median"), "prediction must be"),
        (dict(head_type="diffusion", mse_loss_weight=1.0), dict(prediction="mean", temperature=0.5), "does not use"),
    ],
)
def test_a_prediction_the_model_cannot_make_is_a_value_error(make_pipeline_components, config, kwargs, message):
    pipe = make_generation_pipeline(make_pipeline_components(), **config)
    with pytest.raises(ValueError, match=message):
        pipe(batch_size=1, num_inference_steps=1, **kwargs)


def test_sampling_defaults_set_a_pipelines_default_call_and_survive_saving(make_pipeline_components, tmp_path):
    """A pipeline carries the guidance and temperature its model samples best with (as a transformers model's
    generation_config does); a call's own arguments win, and the mean ignores the temperature."""
    components = make_pipeline_components()
    pipe = make_generation_pipeline(
        components, num_class_embeds=3, class_dropout_prob=0.1, head_type="diffusion", mse_loss_weight=1.0
    )
    pipe = LMDPipeline(**pipe.components, sampling_defaults={"guidance_scale": 2.0, "temperature": 0.5})
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[1, 2], num_inference_steps=2, num_head_inference_steps=3)
    default = latents_of(pipe, generator=gen(0), **kwargs)
    assert pipe.guidance_scale == 2.0
    explicit = latents_of(pipe, generator=gen(0), guidance_scale=2.0, temperature=0.5, **kwargs)
    torch.testing.assert_close(default, explicit)
    other = latents_of(pipe, generator=gen(0), guidance_scale=2.0, temperature=1.0, **kwargs)
    assert not torch.allclose(default, other)
    pipe(image=torch.rand(1, 3, 16, 16), prediction="mean", generator=gen(0), output_type="latent")  # not refused
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = LMDPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.sampling_defaults == {"guidance_scale": 2.0, "temperature": 0.5}
    torch.testing.assert_close(latents_of(loaded, generator=gen(0), **kwargs), default)


@pytest.mark.parametrize(
    ("config", "defaults", "message"),
    [
        (dict(), {"temperature": 0.5}, "no sampling head"),
        (dict(head_type="diffusion"), {"temperature": 0.0}, "temperature must be > 0"),
        (dict(head_type="diffusion"), {"guidance_scale": 0.5}, "guidance_scale must be >= 1"),
        (dict(head_type="diffusion"), {"steps": 4}, "unknown keys \\['steps'\\]"),
    ],
)
def test_sampling_defaults_that_cannot_work_are_refused(make_pipeline_components, config, defaults, message):
    pipe = make_generation_pipeline(make_pipeline_components(), **config)
    with pytest.raises(ValueError, match=message):
        LMDPipeline(**pipe.components, sampling_defaults=defaults)


# ----------------------------------------------------------------------------------------- guidance schedule
def test_linear_guidance_rises_with_the_revealed_share_and_ends_at_the_full_scale(class_pipe):
    """MAR's schedule: the first of two reveal steps is guided at 1 + (w - 1)(1 - cos(pi / 4)), the tokens it
    reveals take that guided mean; with one step (everything revealed at once) it is the constant scale."""
    one_step = dict(class_labels=[2, 0], num_inference_steps=1, guidance_scale=2.5, generator=gen(0))
    torch.testing.assert_close(
        latents_of(class_pipe, guidance_schedule="linear", **one_step), latents_of(class_pipe, **one_step)
    )
    seen = {}

    def first_step(pipe, step, timestep, tensors):
        seen.setdefault(step, tensors)
        return {}

    kwargs = dict(
        class_labels=[2, 0],
        num_inference_steps=2,
        guidance_scale=2.5,
        callback_on_step_end_tensor_inputs=["latents", "mask"],
    )
    linear = latents_of(
        class_pipe, guidance_schedule="linear", generator=gen(0), callback_on_step_end=first_step, **kwargs
    )
    assert not torch.allclose(linear, latents_of(class_pipe, generator=gen(0), **kwargs))
    zeros, full = torch.zeros(2, 4, 8, 8), torch.ones(2, 16)
    cond = class_pipe.transformer(zeros, mask=full, class_labels=[2, 0]).sample
    uncond = class_pipe.transformer(zeros, mask=full, class_labels=[3, 3]).sample
    scale = 1 + 1.5 * (1 - np.cos(np.pi / 4))
    revealed = token_mask_to_latent_mask(1 - seen[0]["mask"], 2, 8, 8).expand_as(cond).bool()
    assert revealed.any()
    expected = uncond + scale * (cond - uncond)
    torch.testing.assert_close(seen[0]["latents"][revealed], expected[revealed], rtol=1e-4, atol=1e-5)


def test_a_guidance_schedule_default_survives_saving_and_a_bad_one_is_refused(make_pipeline_components, tmp_path):
    pipe = make_generation_pipeline(make_pipeline_components(), num_class_embeds=3, class_dropout_prob=0.1)
    kwargs = dict(class_labels=[1, 2], num_inference_steps=2)
    linear = latents_of(pipe, guidance_schedule="linear", generator=gen(0), **kwargs)
    pipe = LMDPipeline(**pipe.components, sampling_defaults={"guidance_schedule": "linear"})
    pipe.set_progress_bar_config(disable=True)
    torch.testing.assert_close(latents_of(pipe, generator=gen(0), **kwargs), linear)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = LMDPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.sampling_defaults == {"guidance_schedule": "linear"}
    torch.testing.assert_close(latents_of(loaded, generator=gen(0), **kwargs), linear)
    with pytest.raises(ValueError, match="guidance_schedule must be one of"):
        pipe(class_labels=[1], num_inference_steps=1, guidance_schedule="cosine")
    with pytest.raises(ValueError, match="guidance_schedule must be one of"):
        LMDPipeline(**pipe.components, sampling_defaults={"guidance_schedule": "rising"})
