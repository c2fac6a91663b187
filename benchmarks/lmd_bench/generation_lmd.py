"""LMD's rows of the generation benchmark: ``LMDModel`` with class conditioning, the MSE, diffusion or categorical
head (the last over the VQModel projector's codebook, sampled MaskGIT-style).

Training is the model's own forward (``class_labels``, label dropout through ``class_dropout_prob`` from the step's
generator, a mask ratio from an ``LMDMaskScheduler`` over the share of the budget spent); sampling is
``LMDPipeline``'s generation path (progressive unmasking from a fully masked latent, ``class_labels``,
``guidance_scale``, the diffusion head's own scheduler, the categorical head's confidence-ordered reveal), decoded by
the projector. Nothing of LMD's sampler is re-implemented here.
"""

from __future__ import annotations

import torch

from diffusers_lmd.models import LMDModel
from diffusers_lmd.models.categorical_head import DEFAULT_CHOICE_TEMPERATURE
from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.projector import Projector, downsample_factor, latent_channels, vq_codebook
from diffusers_lmd.schedulers import LMDMaskScheduler

from .efficiency_methods import SCHEDULE_RESOLUTION, mask_ratio_at
from .generation_methods import GenerationMethod, read_class_labels, write_class_labels
from .generation_presets import GenerationPreset

LMD_HEADS = {"lmd-mse": "mse", "lmd-diffusion": "diffusion", "lmd-categorical": "categorical"}


class LMDGenerationMethod(GenerationMethod):
    """A class-conditional ``LMDModel`` on projector latents, sampled with ``LMDPipeline``.

    Args:
        model: an ``LMDModel`` with ``num_class_embeds`` set.
        mask_scheduler: the training ratio schedule (its maximum should be 1: generation starts fully masked).
        vae: the projector whose latents the model completes.
        num_inference_steps: reveal steps of generation; num_head_inference_steps: the diffusion head's steps.
        temperature: the diffusion head's sampling-noise scale (MAR's temperature), or the categorical head's
            logit temperature.
    """

    space = "latent"

    def __init__(
        self,
        name: str,
        model: LMDModel,
        mask_scheduler: LMDMaskScheduler,
        vae: Projector,
        num_inference_steps: int,
        num_head_inference_steps: int = 50,
        temperature: float = 1.0,
        seed: int = 0,
    ):
        if model.config.num_class_embeds is None:
            raise ValueError(f"{name} needs a class-conditional LMDModel: set num_class_embeds.")
        self.name, self.model, self.mask_scheduler, self.vae = name, model, mask_scheduler, vae
        self.num_classes = model.config.num_class_embeds
        self.num_inference_steps, self.num_head_inference_steps = num_inference_steps, num_head_inference_steps
        self.temperature, self.seed = temperature, seed
        self._pipeline: LMDPipeline | None = None

    def mask_ratio(self, progress: float) -> float:
        if self.mask_scheduler.config.schedule == "truncnorm":  # a fresh draw per point of the run
            step = round(min(max(progress, 0.0), 1.0) * SCHEDULE_RESOLUTION)
            return self.mask_scheduler.get_mask_ratio(step, SCHEDULE_RESOLUTION, seed=self.seed)
        return mask_ratio_at(self.mask_scheduler, progress)

    def conditional_loss(
        self, batch: torch.Tensor, labels: torch.Tensor, progress: float, generator: torch.Generator
    ) -> torch.Tensor:
        return self.model(batch, mask_ratio=self.mask_ratio(progress), generator=generator, class_labels=labels).loss

    @property
    def pipeline(self) -> LMDPipeline:
        """The generation pipeline over the method's own (possibly EMA-swapped) modules."""
        if self._pipeline is None:
            self._pipeline = LMDPipeline(vae=self.vae, transformer=self.model, scheduler=LMDMaskScheduler())
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, guidance_scale: float, generator: torch.Generator) -> torch.Tensor:
        head = {}  # the MSE head takes no sampling options
        if self.model.diffusion_head is not None:
            head = dict(num_head_inference_steps=self.num_head_inference_steps, temperature=self.temperature)
        elif self.model.config.head_type == "categorical":
            head = dict(temperature=self.temperature)
        images = self.pipeline(
            class_labels=labels.tolist(),
            guidance_scale=guidance_scale,
            num_inference_steps=self.num_inference_steps,
            generator=generator,
            output_type="pt",
            **head,
        ).images
        return (images.float() * 2.0 - 1.0).clamp(-1.0, 1.0)  # the pipeline's [0, 1] back to [-1, 1]

    def save_pretrained(self, folder: str) -> None:
        """The generation pipeline (``LMDPipeline.save_pretrained``: ``transformer/``, ``vae/``, ``scheduler/``,
        ``model_index.json``; ``LMDPipeline.from_pretrained`` reads it back) and ``class_labels.json``."""
        self.pipeline.save_pretrained(folder)
        write_class_labels(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str) -> LMDGenerationMethod:
        """The method saved by :meth:`save_pretrained`: the pipeline's modules, and the sampler setting and
        training mask-ratio schedule from ``class_labels.json``."""
        saved = read_class_labels(folder)
        sampler = saved["sampler"]
        pipe = LMDPipeline.from_pretrained(folder)
        schedule, span = sampler["training_mask_ratio"].split()
        low, high = (float(x) for x in span.split("-"))
        return cls(
            saved["method"],
            pipe.transformer,
            LMDMaskScheduler(schedule, mask_ratio_min=low, mask_ratio_max=high),
            pipe.vae,
            sampler["reveal_steps"],
            sampler.get("head_steps", 50),
            sampler.get("temperature", 1.0),
        )

    def sampler_setting(self) -> dict:
        c = self.mask_scheduler.config
        categorical = self.model.config.head_type == "categorical"
        head = f", DDIM {self.num_head_inference_steps} head steps" if self.model.diffusion_head is not None else ""
        if categorical:
            head = f", codes drawn at temperature {self.temperature:g}, revealed by confidence (MaskGIT)"
        setting = {
            "sampler": f"LMDPipeline, {self.num_inference_steps} reveal steps{head}",
            "reveal_steps": self.num_inference_steps,
            "head": self.model.config.head_type,
            "training_mask_ratio": f"{c.schedule} {c.mask_ratio_min:g}-{c.mask_ratio_max:g}",
            "label_dropout": self.model.config.class_dropout_prob,
        }
        if self.model.diffusion_head is not None:
            setting.update(head_steps=self.num_head_inference_steps, temperature=self.temperature)
        if categorical:
            setting.update(temperature=self.temperature, choice_temperature=DEFAULT_CHOICE_TEMPERATURE,
                           codebook_size=self.model.config.codebook_size)  # fmt: skip
        return setting


def build_lmd_generation_method(
    name: str, preset: GenerationPreset, vae: Projector, image_size: int, seed: int = 0
) -> LMDGenerationMethod:
    """``lmd-mse``, ``lmd-diffusion`` or ``lmd-categorical`` at the preset's size (``LMDModel.from_preset(
    preset.lmd_preset)``); the categorical head is sized by, and given, the projector's codebook (a ``VQModel``)."""
    if name not in LMD_HEADS:
        raise ValueError(f"Unknown LMD generation method {name!r}; choose one of {sorted(LMD_HEADS)}.")
    categorical = {}
    if LMD_HEADS[name] == "categorical":
        codebook = vq_codebook(vae)  # a ValueError for an AutoencoderKL
        categorical = dict(codebook_size=vae.config.num_vq_embeddings)
    model = LMDModel.from_preset(
        preset.lmd_preset,
        **preset.lmd_overrides,
        sample_size=image_size // downsample_factor(vae),
        in_channels=latent_channels(vae),
        patch_size=preset.patch_size,
        num_class_embeds=preset.num_classes,
        class_dropout_prob=preset.label_dropout,
        head_type=LMD_HEADS[name],
        **preset.lmd_heads.get(name, {}),
        **categorical,
    )
    if categorical:
        model.set_codebook(codebook)
    schedule, low, high = preset.lmd_schedules[name]
    scheduler = LMDMaskScheduler(schedule, mask_ratio_min=low, mask_ratio_max=high)
    return LMDGenerationMethod(
        name, model, scheduler, vae, preset.lmd_steps, preset.lmd_head_steps, preset.lmd_temperature, seed
    )
