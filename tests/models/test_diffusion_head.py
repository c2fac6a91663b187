"""The per-token diffusion head (MAR's design, method.md §9): initialisation, the noise-prediction loss, and sampling
with diffusers' own DDIMScheduler / DDPMScheduler."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from diffusers_lmd import LMDModel
from diffusers_lmd.masking import patchify, random_mask
from diffusers_lmd.models.diffusion_head import DiffusionHead, sample_tokens

pytestmark = pytest.mark.usefixtures("one_thread")
NUM_TOKENS = 16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def diffusion_model(seed: int = 0, **config) -> LMDModel:
    torch.manual_seed(seed)
    return LMDModel.from_preset("tiny", sample_size=8, in_channels=4, patch_size=2, head_type="diffusion", **config)


def latents(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=gen(seed))


def ddim(model: LMDModel) -> DDIMScheduler:
    return DDIMScheduler.from_config(model.diffusion_head.noise_scheduler.config)


def test_the_head_starts_at_zero_and_its_schedule_is_diffusers_cosine():
    head = diffusion_model().diffusion_head
    out = head(torch.randn(5, 16), torch.tensor([0, 10, 500, 900, 999]), torch.randn(5, 32))
    assert torch.equal(out, torch.zeros(5, 16))  # zero-initialised output: training starts from eps = 0
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(head.noise_scheduler.alphas_cumprod, reference.alphas_cumprod)
    assert head.noise_scheduler.config.clip_sample is False  # normalised latents are not bounded to [-1, 1]


def test_the_model_has_no_mse_head_unless_asked_and_the_losses_add_up():
    only = diffusion_model()
    assert only.decoder_pred is None
    sample, mask, loss = only(latents(), mask_ratio=0.75, generator=gen(), return_dict=False)
    assert sample is None and mask.sum() == 4 * 12
    # Zero-initialised head: the loss is the mean square of the noise, about 1.
    assert loss.item() == pytest.approx(1.0, abs=0.1)

    both = diffusion_model(mse_loss_weight=0.5)
    out = both(latents(), mask_ratio=0.75, generator=gen())
    features = both.forward_features(latents(), out.mask)
    pred = both.decoder_pred(features)
    mse = both.forward_loss(patchify(latents(), 2), pred, out.mask)
    # The diffusion part draws after the mask from the same generator: replay it to get it alone.
    g = gen()
    random_mask(4, NUM_TOKENS, 0.75, generator=g)
    diffusion = both.diffusion_head.loss(
        patchify(latents(), 2).flatten(0, 1), features.flatten(0, 1), out.mask.flatten(), g, 4
    )
    torch.testing.assert_close(out.loss, diffusion + 0.5 * mse)


def test_the_loss_counts_masked_tokens_only_and_is_reproducible():
    model = diffusion_model(diffusion_batch_mul=2)
    x = latents()
    a = model(x, mask_ratio=0.5, generator=gen(7))
    b = model(x, mask_ratio=0.5, generator=gen(7))
    assert torch.equal(a.loss, b.loss)
    assert model(x, mask=torch.zeros(4, NUM_TOKENS)).loss.item() == 0.0  # nothing masked, nothing to learn


def test_the_noise_prediction_loss_falls_on_a_fixed_batch():
    model = diffusion_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x = latents(8)
    losses = []
    for step in range(60):
        loss = model(x, mask_ratio=1.0, generator=gen(step % 4)).loss  # four fixed draws, fully masked
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8, losses


def trained_head(steps: int = 300) -> DiffusionHead:
    """A head fitted to a two-point distribution per condition: token = +c or -c (c the first condition value)."""
    torch.manual_seed(0)
    head = DiffusionHead(token_dim=2, condition_dim=1, width=32, num_layers=2)
    head.init_weights()
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for step in range(steps):
        g = gen(step)
        condition = torch.rand(256, 1, generator=g) + 1.0
        sign = torch.randint(0, 2, (256, 1), generator=g) * 2 - 1
        target = (sign * condition).expand(-1, 2).contiguous()
        loss = head.loss(target, condition, torch.ones(256), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


def test_samples_are_diverse_differ_by_seed_and_repeat_with_the_same_seed():
    head = trained_head()
    condition = torch.full((64, 1), 1.5)
    picked = torch.ones(1, 64, dtype=torch.bool)
    scheduler = DDIMScheduler.from_config(head.noise_scheduler.config)

    def draw(seed: int, **kwargs) -> torch.Tensor:
        return sample_tokens(head, condition[None], picked, scheduler, 25, gen(seed), **kwargs)

    first, again, other = draw(0), draw(0), draw(1)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    # An MSE head would predict the mean, 0; the diffusion head draws both modes, near +-1.5.
    assert (first[:, 0] > 0.75).any() and (first[:, 0] < -0.75).any()
    assert (first[:, 0].abs() - 1.5).abs().median() < 0.2
    cold = draw(0, temperature=0.05)
    assert not torch.allclose(cold, first)


def test_ddim_at_eta_one_takes_ddpms_ancestral_step():
    """Why temperature uses DDIMScheduler: at eta = 1 it is DDPM's sampler and takes the noise it adds."""
    config = diffusion_model().diffusion_head.noise_scheduler.config
    ddim_scheduler, ddpm_scheduler = DDIMScheduler.from_config(config), DDPMScheduler.from_config(config)
    ddim_scheduler.set_timesteps(10)
    ddpm_scheduler.set_timesteps(10)
    assert torch.equal(ddim_scheduler.timesteps, ddpm_scheduler.timesteps)
    x, eps = torch.randn(6, 16, generator=gen(0)), torch.randn(6, 16, generator=gen(1))
    for t in ddim_scheduler.timesteps[:-1]:
        noise = randn_tensor(x.shape, generator=gen(int(t)), dtype=x.dtype)
        a = ddim_scheduler.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
        b = ddpm_scheduler.step(eps, t, x, generator=gen(int(t))).prev_sample
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DDPMScheduler])
def test_a_batch_of_images_draws_what_single_image_calls_draw(scheduler_class):
    model = diffusion_model().eval()
    torch.nn.init.normal_(model.diffusion_head.proj_out.weight, std=0.1)  # a head that does something
    scheduler = scheduler_class.from_config(model.diffusion_head.noise_scheduler.config)
    x = latents(3)
    picked = random_mask(3, NUM_TOKENS, 0.5, generator=gen(5)).bool()
    with torch.no_grad():
        features = model.forward_features(x, picked.float())
    batch = sample_tokens(model.diffusion_head, features, picked, scheduler, 8, [gen(i) for i in range(3)])
    singles = [
        sample_tokens(model.diffusion_head, features[i : i + 1], picked[i : i + 1], scheduler, 8, gen(i))
        for i in range(3)
    ]
    torch.testing.assert_close(batch, torch.cat(singles), rtol=1e-5, atol=1e-5)


def test_temperature_needs_a_scheduler_that_takes_the_noise():
    head = diffusion_model().diffusion_head
    ddpm = DDPMScheduler.from_config(head.noise_scheduler.config)
    with pytest.raises(ValueError, match="temperature=0.5 needs a scheduler that takes variance_noise"):
        sample_tokens(head, torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool), ddpm, 5, gen(), 0.5)


def test_guidance_mixes_the_conditional_and_unconditional_noise():
    head = trained_head(100)
    scheduler = DDIMScheduler.from_config(head.noise_scheduler.config)
    picked = torch.ones(1, 8, dtype=torch.bool)
    cond, uncond = torch.full((1, 8, 1), 1.8), torch.full((1, 8, 1), 1.0)
    both = torch.cat([cond, uncond])
    guided = sample_tokens(head, both, picked, scheduler, 10, gen(0), guidance_scale=1.0 + 1e-9)
    plain = sample_tokens(head, cond, picked, scheduler, 10, gen(0))
    torch.testing.assert_close(guided, plain, rtol=1e-4, atol=1e-4)  # w -> 1 is the conditional pass
    strong = sample_tokens(head, both, picked, scheduler, 10, gen(0), guidance_scale=3.0)
    assert strong[:, 0].abs().mean() > plain[:, 0].abs().mean()  # pushed away from the weaker condition
