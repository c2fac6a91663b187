"""A per-token diffusion head (MAR's design): a small MLP denoiser that samples each masked latent patch.

An MSE head predicts the conditional mean of a masked patch, which is a blur wherever the visible context
leaves the patch uncertain (method.md §9). This head instead models the patch's distribution given the decoder's
feature of that token: residual MLP blocks modulated (adaLN) by the feature plus the diffusion timestep,
zero-initialised so training starts from the identity. It is trained with the noise-prediction loss under a
diffusers ``DDPMScheduler`` noise schedule and sampled with any diffusers scheduler (``DDIMScheduler``,
``DDPMScheduler``...): the head supplies ``model_output``, the scheduler does every update.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from diffusers import DDPMScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

HEAD_TYPES = ("mse", "diffusion", "categorical")  # categorical: models/categorical_head.py
TIMESTEP_CHANNELS = 256  # sinusoidal features before the timestep MLP, as in DiT and MAR


class AdaLNResBlock(nn.Module):
    """``x + gate * MLP(LN(x) * (1 + scale) + shift)`` with shift, scale and gate predicted from the condition."""

    def __init__(self, width: int, norm_eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(condition).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """Predicts the noise in a noised latent patch from the patch, its timestep and its decoder feature.

    Args:
        token_dim: values per latent patch (``patch_size**2 * in_channels``).
        condition_dim: width of the decoder feature that conditions each token.
        width: the MLP's width.
        num_layers: residual adaLN blocks.
        num_train_timesteps / beta_schedule: the training noise schedule (a diffusers ``DDPMScheduler``).
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        token_dim: int,
        condition_dim: int,
        width: int,
        num_layers: int = 3,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.input_proj = nn.Linear(token_dim, width)
        self.time_proj = Timesteps(TIMESTEP_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.time_embed = TimestepEmbedding(TIMESTEP_CHANNELS, width)
        self.condition_embed = nn.Linear(condition_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width, norm_eps) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=norm_eps)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.proj_out = nn.Linear(width, token_dim)
        # Latents are normalised, not bounded: no clipping of the predicted clean patch. Samplers built from this
        # config space their steps as Stable Diffusion's DDIM does ("leading", offset 1: 981, 961, ... 1 for 50
        # steps); "trailing" would start at the last timestep, where the cosine schedule's alpha_bar is ~2e-9 and
        # DDIM's eta = 1 update takes the square root of a rounding-negative number in float32 (NaN).
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            clip_sample=False,
            prediction_type="epsilon",
            timestep_spacing="leading",
            steps_offset=1,
        )

    def init_weights(self) -> None:
        """MAR's initialisation: xavier linears, small timestep MLP, and every modulation and the output at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for linear in (self.time_embed.linear_1, self.time_embed.linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        for modulation in [block.modulation for block in self.blocks] + [self.modulation_out]:
            nn.init.zeros_(modulation[-1].weight)
            nn.init.zeros_(modulation[-1].bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``N x token_dim`` noised patches, ``N`` timesteps, ``N x condition_dim`` features -> predicted noise."""
        x = self.input_proj(noisy)
        y = self.time_embed(self.time_proj(timesteps).to(x.dtype)) + self.condition_embed(condition)
        for block in self.blocks:
            x = block(x, y)
        shift, scale = self.modulation_out(y).chunk(2, dim=-1)
        return self.proj_out(self.norm_out(x) * (1 + scale) + shift)

    def loss(
        self,
        target: torch.Tensor,
        condition: torch.Tensor,
        weight: torch.Tensor,
        generator: torch.Generator | None = None,
        batch_mul: int = 1,
    ) -> torch.Tensor:
        """Noise-prediction MSE at a random timestep per token, averaged with ``weight`` (1 = masked token).

        Each token is noised ``batch_mul`` times (MAR: 4): the head is cheap, and more draws per decoder pass
        lower the loss's variance. Timesteps and noise come from ``generator`` (on its device), so a run
        resumed with the same per-step generators repeats them.
        """
        target = target.repeat(batch_mul, 1)
        condition, weight = condition.repeat(batch_mul, 1), weight.repeat(batch_mul)
        num_train_timesteps = self.noise_scheduler.config.num_train_timesteps
        draw_device = generator.device if generator is not None else target.device
        timesteps = torch.randint(num_train_timesteps, (target.shape[0],), generator=generator, device=draw_device)
        noise = torch.randn(target.shape, generator=generator, device=draw_device).to(target.device, target.dtype)
        timesteps = timesteps.to(target.device)
        noisy = self.noise_scheduler.add_noise(target, noise, timesteps)
        per_token = (self(noisy, timesteps, condition).float() - noise.float()).pow(2).mean(dim=-1)
        return (per_token * weight).sum() / weight.sum().clamp(min=1)

    @torch.no_grad()
    def sample(
        self,
        condition: torch.Tensor,
        scheduler: SchedulerMixin,
        num_inference_steps: int,
        draw_noise: Callable[[], torch.Tensor],
        temperature: float = 1.0,
        guidance_scale: float = 1.0,
        step_generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``N`` latent patches by running ``scheduler`` from pure noise, the head predicting the noise.

        Args:
            condition: ``N x condition_dim`` decoder features; with ``guidance_scale > 1``, ``2N`` rows: the
                conditional features, then the unconditional ones (classifier-free guidance on the noise).
            scheduler: a diffusers scheduler with the training noise schedule (``DDIMScheduler`` or ``DDPMScheduler``).
            num_inference_steps: scheduler steps.
            draw_noise: returns fresh ``N x token_dim`` standard normal noise; the caller decides which generator
                draws it, so a batch can repeat single-image runs exactly.
            temperature: scales the noise each step adds (MAR's temperature); schedulers that take no
                ``variance_noise`` (``DDPMScheduler``) draw it themselves, from ``step_generator``, at temperature 1.
            guidance_scale: classifier-free guidance weight, ``eps_u + w (eps_c - eps_u)``.
            step_generator: the generator of schedulers that draw their own noise.
            noise: the ``N x token_dim`` starting noise; default: ``draw_noise()``.
        """
        step_parameters = inspect.signature(scheduler.step).parameters
        takes_noise = takes_variance_noise(scheduler)
        # DDIM at eta=1 adds DDPM's posterior noise: the ancestral sampler MAR uses, with a temperature on it.
        step_kwargs = {"eta": 1.0} if "eta" in step_parameters else {}
        if temperature != 1.0 and not takes_noise:
            raise ValueError(
                f"temperature={temperature} needs a scheduler that takes variance_noise (DDIMScheduler); "
                f"{type(scheduler).__name__} draws its noise itself. Use DDIMScheduler (eta=1 is the same ancestral "
                "sampler as DDPMScheduler) or temperature=1."
            )
        scheduler.set_timesteps(num_inference_steps, device=condition.device)
        x = (draw_noise() if noise is None else noise) * scheduler.init_noise_sigma
        guided = guidance_scale > 1.0
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            timesteps = t.to(condition.device).expand(model_input.shape[0])
            eps = self(model_input, timesteps, condition)
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            if takes_noise:
                noise = temperature * draw_noise()
                x = scheduler.step(eps, t, x, variance_noise=noise, **step_kwargs).prev_sample
            else:
                x = scheduler.step(eps, t, x, generator=step_generator, **step_kwargs).prev_sample
        return x


def takes_variance_noise(scheduler: SchedulerMixin) -> bool:
    """Whether ``scheduler.step`` accepts the noise it adds (``DDIMScheduler``) rather than drawing it."""
    return "variance_noise" in inspect.signature(scheduler.step).parameters


def sample_tokens(
    head: DiffusionHead,
    features: torch.Tensor,
    picked: torch.Tensor,
    scheduler: SchedulerMixin,
    num_inference_steps: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
    temperature: float = 1.0,
    guidance_scale: float = 1.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw the latent patches at the ``picked`` tokens, ``N x token_dim`` in row-major order.

    Args:
        head: the model's diffusion head.
        features: decoder features, ``B x L x D``; with ``guidance_scale > 1``, ``2B`` rows (conditional, then
            unconditional).
        picked: ``B x L`` bool, the tokens to draw.
        scheduler / num_inference_steps / temperature / guidance_scale: as in :meth:`DiffusionHead.sample`.
        generator: one generator, or one per image so that a batch draws what single-image calls draw: noise is
            drawn for the whole ``L x token_dim`` grid of each image and the picked tokens taken from it.
        noise: ``B x L x token_dim``, every token's starting noise (the picked ones are used); default: drawn.
    """
    batch = picked.shape[0]
    if isinstance(generator, list) and not takes_variance_noise(scheduler):  # it draws per call: one image a call
        rows = [
            sample_tokens(
                head,
                features[i::batch] if guidance_scale > 1 else features[i : i + 1],
                picked[i : i + 1],
                scheduler,
                num_inference_steps,
                g,
                temperature,
                guidance_scale,
                None if noise is None else noise[i : i + 1],
            )
            for i, g in enumerate(generator)
        ]
        return torch.cat(rows)
    condition = features[:batch][picked]
    if guidance_scale > 1:
        condition = torch.cat([condition, features[batch:][picked]])
    shape = (batch, picked.shape[1], head.proj_out.out_features)

    def draw_noise() -> torch.Tensor:
        return randn_tensor(shape, generator=generator, device=features.device, dtype=features.dtype)[picked]

    step_generator = None if isinstance(generator, list) else generator  # a list only reaches here with variance_noise
    start = None if noise is None else noise[picked].to(features.device, features.dtype)
    return head.sample(
        condition, scheduler, num_inference_steps, draw_noise, temperature, guidance_scale, step_generator, start
    )


def check_head_options(head_type: str, mse_loss_weight: float, codebook_size: int | None = None) -> None:
    """Raise a ``ValueError`` for an ``LMDModel`` head option that cannot work."""
    if head_type not in HEAD_TYPES:
        raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {head_type!r}.")
    if mse_loss_weight < 0 or (head_type == "mse" and mse_loss_weight):
        raise ValueError(
            f"mse_loss_weight={mse_loss_weight}: it weighs an extra MSE loss beside a sampling head, so it must "
            "be >= 0 and is only for head_type='diffusion' or 'categorical'."
        )
    sized = isinstance(codebook_size, int) and not isinstance(codebook_size, bool) and codebook_size >= 2
    if head_type == "categorical" and not sized:
        raise ValueError(
            f"head_type='categorical' needs codebook_size, the VQModel's number of codes (vae.config."
            f"num_vq_embeddings, at least 2), got {codebook_size!r}."
        )
    if head_type != "categorical" and codebook_size is not None:
        raise ValueError(
            f"codebook_size={codebook_size} sizes the categorical head: it needs head_type='categorical', got "
            f"{head_type!r}."
        )
