"""amused-tokens (aMUSEd's UVit2DModel on the projector's VQ codes) at tiny sizes: seeded sampling in range,
guidance's two branches, the refusal of a KL projector, and the CPU preset's model in LMD's size class."""

import pytest
import torch
from diffusers import AutoencoderKL, VQModel

from diffusers_lmd.models import LMDModel
from lmd_bench.generation_amused import AmusedTokensMethod, build_amused_generation_method
from lmd_bench.generation_bench import build_generation_method
from lmd_bench.generation_presets import get_generation_preset
from tests.benchmarks.test_bench_generation import NUM_CLASSES, tiny_preset
from tests.conftest import TINY_PROJECTOR


@pytest.fixture(scope="module")
def method() -> AmusedTokensMethod:
    torch.manual_seed(0)
    vae = VQModel(**TINY_PROJECTOR, num_vq_embeddings=16, vq_embed_dim=4).eval()
    method = build_generation_method("amused-tokens", tiny_preset(), vae, 16, seed=0)
    torch.nn.init.normal_(method.model.class_embedding.pooled.weight, std=3.0)  # make the classes differ at init
    return method


def draw(method, seed=0, scale=1.0, labels=(0, 1, 2, 3)):
    return method.sample(torch.tensor(labels), scale, torch.Generator().manual_seed(seed))


def test_samples_are_seeded_images_in_range(method, one_thread):
    images = draw(method)
    assert images.shape == (4, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, draw(method))  # the same generator, the same samples
    assert not torch.equal(images, draw(method, seed=1))
    assert method.sampler_setting()["steps"] == 3 and method.sampler_setting()["temperature"] == [2.0, 0.0]


def test_guidance_runs_the_conditional_and_null_branches(method, one_thread):
    seen = []

    def record(module, args, kwargs):
        seen.append(args[0].clone())

    handle = method.model.class_embedding.register_forward_pre_hook(record, with_kwargs=True)
    try:
        guided = draw(method, scale=3.0)
    finally:
        handle.remove()
    assert len(seen) == 3  # one batched call per MaskGIT step
    assert seen[0].tolist() == [NUM_CLASSES] * 4 + [0, 1, 2, 3]  # the null class, then the classes
    assert not torch.allclose(guided, draw(method))


def test_training_masks_with_the_cosine_schedule_and_ignores_visible_tokens(method, one_thread):
    codes = torch.randint(0, 16, (64, 8, 8))
    latents = method.codebook[codes].permute(0, 3, 1, 2)
    assert torch.equal(method.codes(latents), codes)  # the batch's latents are the projector's codes
    inputs = []
    handle = method.model.transformer.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
    try:
        loss = method.conditional_loss(latents, torch.arange(64) % NUM_CLASSES, 0.5, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    masked = inputs[0] == method.mask_token_id
    share = masked.flatten(1).float().mean(1)
    assert masked.flatten(1).sum(1).min() >= 1 and 0.5 < float(share.mean()) < 0.78  # E[cos(u pi / 2)] = 2 / pi
    assert torch.equal(inputs[0][~masked], codes[~masked]) and loss.ndim == 0 and torch.isfinite(loss)


def test_a_kl_projector_is_refused():
    vae = AutoencoderKL(**TINY_PROJECTOR)
    with pytest.raises(ValueError, match="VQModel"):
        build_amused_generation_method(tiny_preset(), vae, 16)


def test_the_cpu_preset_is_lmds_size_class():
    """fmnist-cpu's amused-tokens on a 1,024-code f=2 projector: within 15 % of LMD's parameters (embedding tables
    included), its transformer layers see 64 tokens as LMD's ViT sees 64 patches."""
    preset = get_generation_preset("fmnist-cpu")
    vae = VQModel(**TINY_PROJECTOR, num_vq_embeddings=1024, vq_embed_dim=4)
    amused = build_amused_generation_method(preset, vae, 32)
    lmd = LMDModel.from_preset(preset.lmd_preset, **preset.lmd_overrides, sample_size=16, in_channels=4,
                               patch_size=preset.patch_size, num_class_embeds=10, head_type="mse")  # fmt: skip
    count = sum(p.numel() for p in amused.model.parameters())
    lmd_count = sum(p.numel() for p in lmd.parameters())
    assert 1.0 < count / lmd_count < 1.15, (count, lmd_count)
    config = amused.model.transformer.config
    assert config.sample_size == 16 and config.downsample and config.vocab_size == 1025
