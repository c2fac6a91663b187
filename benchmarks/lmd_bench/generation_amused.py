"""aMUSEd's row of the generation benchmark (paper Table 4's token peer): diffusers' ``UVit2DModel`` over the
projector's VQ codes, trained with MaskGIT's masked cross-entropy and sampled with ``AmusedScheduler``.

The tokens are the projector's own codes: the benchmark's latent batches are normalised projector latents, so
``nearest_codes(batch, vq_codebook(vae))`` are exactly the codes ``VQModel.quantize`` picks (a KL projector has no
codebook: ``ValueError``). The vocabulary is the codebook plus one mask token (id ``codebook_size``).

Class conditioning replaces aMUSEd's CLIP text encoder by a learned table (:class:`ClassConditionEmbedding`,
``num_classes + 1`` rows, the last the null class of classifier-free guidance, DiT's convention) giving both the
``encoder_hidden_states`` (a few condition tokens) and the ``pooled_text_emb``. The ``micro_conds`` are constant,
aMUSEd's pipeline defaults: ``(width, height, crop_x = 0, crop_y = 0, aesthetic score = 6)``.

Training follows diffusers' ``examples/amused/train_amused.py``: per image a mask probability ``cos(u * pi / 2)``
with ``u ~ U(0, 1)`` (at least one token masked), cross-entropy on the masked positions only, and the shared label
dropout. Sampling is ``AmusedPipeline``'s loop (guidance on the logits, ``uncond + s * (cond - uncond)``), the final
codes looked up in the codebook and decoded by the projector.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from diffusers import AmusedScheduler, UVit2DModel, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from diffusers_lmd.projector import Projector, decode_latents, downsample_factor, nearest_codes, vq_codebook

from .generation_methods import GenerationMethod, drop_labels, read_class_labels, write_class_labels
from .generation_presets import GenerationPreset

AESTHETIC_SCORE = 6.0  # AmusedPipeline's micro_conditioning_aesthetic_score default


class ClassConditionEmbedding(ModelMixin, ConfigMixin):
    """A class label -> ``num_tokens`` condition tokens (``encoder_hidden_states``) and a pooled embedding
    (``pooled_text_emb``): what aMUSEd's text encoder gives ``UVit2DModel``, learned per class.

    Row ``num_classes`` is the null class (the unconditional branch of classifier-free guidance).
    """

    @register_to_config
    def __init__(self, num_classes: int, num_tokens: int = 2, encoder_hidden_size: int = 768,
                 cond_embed_dim: int = 768):  # fmt: skip
        super().__init__()
        if num_classes < 1 or num_tokens < 1:
            raise ValueError(f"num_classes and num_tokens must be positive, got {num_classes}, {num_tokens}.")
        self.tokens = nn.Embedding(num_classes + 1, num_tokens * encoder_hidden_size)
        self.pooled = nn.Embedding(num_classes + 1, cond_embed_dim)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return self.tokens(labels).view(labels.shape[0], c.num_tokens, c.encoder_hidden_size), self.pooled(labels)


class AmusedTokenModel(nn.Module):
    """The trained module: the ``UVit2DModel`` and the class table, so the optimiser and the EMA cover both."""

    def __init__(self, transformer: UVit2DModel, class_embedding: ClassConditionEmbedding, micro_conds: torch.Tensor):
        super().__init__()
        self.transformer, self.class_embedding = transformer, class_embedding
        self.register_buffer("micro_conds", micro_conds.float(), persistent=False)

    @property
    def config(self) -> dict:
        """Both parts' configs (what the shared loop's ``EMAModel`` records; the parts save themselves)."""
        return {"transformer": dict(self.transformer.config), "class_embedding": dict(self.class_embedding.config)}

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``B x H x W`` token ids (mask id where masked) and ``B`` labels -> logits ``B x codebook_size x H x W``."""
        encoder_hidden_states, pooled = self.class_embedding(labels)
        micro_conds = self.micro_conds.expand(input_ids.shape[0], -1)
        return self.transformer(input_ids, encoder_hidden_states, pooled, micro_conds)


def amused_micro_conds(image_size: int) -> torch.Tensor:
    """aMUSEd's pipeline defaults for a ``image_size`` square image: width, height, crop (0, 0), aesthetic 6."""
    return torch.tensor([image_size, image_size, 0.0, 0.0, AESTHETIC_SCORE])


class AmusedTokensMethod(GenerationMethod):
    """A class-conditional ``UVit2DModel`` on the projector's VQ code grid, sampled with ``AmusedScheduler``.

    Args:
        transformer: ``UVit2DModel`` with ``codebook_size`` = the projector's codes, ``vocab_size = codebook_size +
            1`` and ``sample_size`` = the code grid's side; its micro-conditioning must take 5 values.
        class_embedding: the class table (``num_classes + 1`` rows) matching the transformer's condition widths.
        vae: the VQ projector (a KL one: ``ValueError``).
        num_inference_steps: MaskGIT decoding steps; temperature: ``AmusedScheduler``'s ``(start, end)`` of the
            linear temperature of the re-masking noise.
        label_dropout: share of training labels replaced by the null class.
    """

    space = "latent"

    def __init__(
        self,
        name: str,
        transformer: UVit2DModel,
        class_embedding: ClassConditionEmbedding,
        vae: Projector,
        num_inference_steps: int = 12,
        temperature: tuple[float, float] = (2.0, 0.0),
        label_dropout: float = 0.1,
        masking_schedule: str = "cosine",
    ):
        codebook = vq_codebook(vae)  # ValueError for a KL projector
        t, e = transformer.config, class_embedding.config
        k = codebook.shape[0]
        if t.codebook_size != k or t.vocab_size != k + 1:
            raise ValueError(
                f"The projector has {k} codes: the UVit2DModel needs codebook_size={k} and vocab_size={k + 1} (the "
                f"mask token), got {t.codebook_size}, {t.vocab_size}."
            )
        if e.encoder_hidden_size != t.encoder_hidden_size or e.cond_embed_dim != t.cond_embed_dim:
            raise ValueError("The class embedding's encoder_hidden_size / cond_embed_dim differ from the UVit2DModel.")
        if t.micro_cond_embed_dim != 5 * t.micro_cond_encode_dim:
            raise ValueError("micro_cond_embed_dim must be 5 * micro_cond_encode_dim (aMUSEd's 5 micro-conditions).")
        if not 0.0 <= label_dropout < 1.0 or num_inference_steps < 1:
            raise ValueError(f"Need 0 <= label_dropout < 1 and num_inference_steps >= 1, got {label_dropout}, "
                             f"{num_inference_steps}.")  # fmt: skip
        self.name, self.vae, self.codebook = name, vae, codebook
        self.num_classes = e.num_classes
        self.mask_token_id = k
        image_size = t.sample_size * downsample_factor(vae)
        self.model = AmusedTokenModel(transformer, class_embedding, amused_micro_conds(image_size))
        self.scheduler = AmusedScheduler(mask_token_id=k, masking_schedule=masking_schedule)
        self.num_inference_steps, self.temperature = num_inference_steps, tuple(float(x) for x in temperature)
        self.label_dropout = label_dropout

    def codes(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised projector latents -> their VQ codes ``B x H x W``."""
        return nearest_codes(latents, self.codebook).to(latents.device)

    def conditional_loss(
        self, batch: torch.Tensor, labels: torch.Tensor, progress: float, generator: torch.Generator
    ) -> torch.Tensor:
        codes = self.codes(batch)
        b, h, w = codes.shape
        rand = dict(generator=generator, device=generator.device)
        mask_prob = torch.cos(torch.rand(b, **rand) * math.pi / 2)  # aMUSEd's cosine schedule, per image
        num_masked = (h * w * mask_prob).round().clamp(min=1)
        mask = (torch.rand(b, h * w, **rand).argsort(dim=-1) < num_masked[:, None]).view(b, h, w).to(codes.device)
        input_ids = torch.where(mask, self.mask_token_id, codes)
        labels = drop_labels(labels.to(codes.device), self.num_classes, self.label_dropout, generator)
        logits = self.model(input_ids, labels)
        return F.cross_entropy(logits.permute(0, 2, 3, 1)[mask].float(), codes[mask])

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, guidance_scale: float, generator: torch.Generator) -> torch.Tensor:
        device = next(self.model.parameters()).device
        size = self.model.transformer.config.sample_size
        labels = labels.to(device)
        guided = guidance_scale > 1.0
        if guided:  # AmusedPipeline's order: unconditional first
            labels = torch.cat([torch.full_like(labels, self.num_classes), labels])
        b = labels.shape[0] // 2 if guided else labels.shape[0]
        ids = torch.full((b, size, size), self.mask_token_id, dtype=torch.long, device=device)
        scheduler = AmusedScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.num_inference_steps, self.temperature, device)
        for t in scheduler.timesteps:
            logits = self.model(torch.cat([ids, ids]) if guided else ids, labels)
            if guided:
                uncond, cond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            ids = scheduler.step(logits.float(), t, ids, generator=generator).prev_sample
        latents = self.codebook.to(device)[ids].permute(0, 3, 1, 2)
        return decode_latents(self.vae, latents).float().clamp(-1.0, 1.0)

    def sampler_setting(self) -> dict:
        return {
            "sampler": f"AmusedScheduler, {self.num_inference_steps} MaskGIT steps "
            f"({self.scheduler.config.masking_schedule} schedule), codes decoded by the projector",
            "steps": self.num_inference_steps,
            "temperature": list(self.temperature),
            "temperature_schedule": f"linear {self.temperature[0]:g} -> {self.temperature[1]:g}",
            "training_mask_ratio": "cos(u * pi / 2), u ~ U(0, 1) per image",
            "micro_conds": self.model.micro_conds.tolist(),
            "label_dropout": self.label_dropout,
        }

    def save_pretrained(self, folder: str) -> None:
        """``transformer/`` (UVit2DModel), ``scheduler/`` (AmusedScheduler), ``vqvae/`` (the VQModel),
        ``class_embedding/`` (safetensors) and ``class_labels.json``; :meth:`from_pretrained` reads them back."""
        self.model.transformer.save_pretrained(os.path.join(folder, "transformer"))
        self.scheduler.save_pretrained(os.path.join(folder, "scheduler"))
        self.vae.save_pretrained(os.path.join(folder, "vqvae"))
        self.model.class_embedding.save_pretrained(os.path.join(folder, "class_embedding"), safe_serialization=True)
        write_class_labels(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str, name: str = "amused-tokens") -> AmusedTokensMethod:
        """The method saved by :meth:`save_pretrained` (its sampler setting from ``class_labels.json``)."""
        saved = read_class_labels(folder)
        scheduler = AmusedScheduler.from_pretrained(folder, subfolder="scheduler")
        sampler = saved["sampler"]
        return cls(
            name,
            UVit2DModel.from_pretrained(folder, subfolder="transformer"),
            ClassConditionEmbedding.from_pretrained(folder, subfolder="class_embedding"),
            VQModel.from_pretrained(folder, subfolder="vqvae"),
            sampler["steps"],
            tuple(sampler["temperature"]),
            sampler["label_dropout"],
            scheduler.config.masking_schedule,
        )


def build_amused_generation_method(
    preset: GenerationPreset, vae: Projector, image_size: int, name: str = "amused-tokens"
) -> AmusedTokensMethod:
    """``amused-tokens`` at ``preset.amused_config`` for ``vae``'s codes (``ValueError`` for a KL projector)."""
    k = vq_codebook(vae).shape[0]
    if not preset.amused_config:
        raise ValueError("amused-tokens needs the preset's amused_config (UVit2DModel architecture).")
    transformer = UVit2DModel(
        **preset.amused_config, codebook_size=k, vocab_size=k + 1, sample_size=image_size // downsample_factor(vae)
    )
    t = transformer.config
    embedding = ClassConditionEmbedding(
        preset.num_classes, preset.amused_condition_tokens, t.encoder_hidden_size, t.cond_embed_dim
    )
    return AmusedTokensMethod(
        name, transformer, embedding, vae, preset.amused_steps, preset.amused_temperature, preset.label_dropout
    )
