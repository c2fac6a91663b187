"""Class labels and prompts of the LMD pipelines: label names, prompt encoding, guidance batches, argument checks.

Names follow diffusers: ``class_labels`` and ``id2label`` / ``get_label_ids`` as in ``DiTPipeline`` (the null
class is ``num_class_embeds``), ``prompt`` / ``negative_prompt`` / ``prompt_embeds`` / ``negative_prompt_embeds``
as in the text-to-image pipelines. With ``guidance_scale > 1`` the transformer runs the conditional and the
unconditional inputs in one batch: the null class, and the negative prompt (default: the empty prompt, the null
condition label dropout trains). The checks cover the diffusion head's sampling arguments too.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from diffusers import SchedulerMixin

from ..models import LMDModel
from ..models.diffusion_head import takes_variance_noise
from .text_inputs import NULL_PROMPT, encode_text

ClassLabelInput = int | str | Sequence[int] | Sequence[str] | torch.Tensor | None
PromptInput = str | Sequence[str] | None
# Classifier-free guidance of conditional generation when a call sets none (DiTPipeline's default is 4.0); chosen on
# the demo model's conditional accuracy and FID (docs/pipeline.md).
DEFAULT_GUIDANCE_SCALE = 3.0
# What a pipeline's ``sampling_defaults`` may set: the defaults of its calls, chosen for its model (as a transformers
# model's generation_config.json carries its own temperature).
SAMPLING_DEFAULT_KEYS = ("guidance_scale", "temperature", "guidance_schedule")
# How the guidance weight moves over the reveal steps: "constant" (w at every step), or "linear" (MAR's: rising from
# 1 with the share of tokens revealed, w at the last step), which leaves the first, layout-deciding steps less guided.
GUIDANCE_SCHEDULES = ("constant", "linear")


def check_guidance_schedule(schedule: str) -> None:
    """A ``ValueError`` naming ``guidance_schedule`` when it is not one of :data:`GUIDANCE_SCHEDULES`."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule must be one of {list(GUIDANCE_SCHEDULES)}, got {schedule!r}.")


def step_guidance_scale(guidance_scale: float, schedule: str, masked_fraction: float) -> float:
    """The guidance weight of one reveal step, after which ``masked_fraction`` of the tokens are still masked."""
    if schedule == "linear":
        return 1.0 + (guidance_scale - 1.0) * (1.0 - masked_fraction)
    return guidance_scale


def check_sampling_defaults(defaults: dict | None, transformer: LMDModel) -> dict | None:
    """``defaults`` as a plain dict, or a ``ValueError`` naming a key or value that cannot work for ``transformer``."""
    if not defaults:
        return None
    unknown = sorted(set(defaults) - set(SAMPLING_DEFAULT_KEYS))
    if unknown:
        raise ValueError(f"sampling_defaults takes {list(SAMPLING_DEFAULT_KEYS)}, got unknown keys {unknown}.")
    if defaults.get("guidance_scale", 1.0) < 1:
        raise ValueError(f"sampling_defaults' guidance_scale must be >= 1, got {defaults['guidance_scale']}.")
    if "temperature" in defaults:
        if defaults["temperature"] <= 0:
            raise ValueError(f"sampling_defaults' temperature must be > 0, got {defaults['temperature']}.")
        if transformer.config.head_type == "mse":
            raise ValueError("sampling_defaults sets a temperature, but this transformer has no sampling head.")
    if "guidance_schedule" in defaults:
        check_guidance_schedule(defaults["guidance_schedule"])
    return {key: value if key == "guidance_schedule" else float(value) for key, value in defaults.items()}


def _as_list(value) -> list:
    """A label or prompt input as a list: one item, a sequence, or a 0-/1-D tensor."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist()
    return [value] if isinstance(value, (numbers.Integral, str)) else list(value)


def condition_count(class_labels: ClassLabelInput, prompt: PromptInput, prompt_embeds: torch.Tensor | None):
    """How many images the conditions ask for (the batch of a generation call without ``batch_size``), or None."""
    if prompt_embeds is not None:
        return prompt_embeds.shape[0]
    for value in (class_labels, prompt):
        if value is not None:
            return len(_as_list(value))
    return None


def _broadcast(name: str, value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """One row for the whole batch, or one per image."""
    if value.shape[0] == batch_size:
        return value
    if value.shape[0] == 1:
        return value.expand(batch_size, *value.shape[1:])
    raise ValueError(f"Got {value.shape[0]} {name} for a batch of {batch_size}: pass one, or one per image.")


def label_index(id2label: dict | None) -> dict[str, int]:
    """``{name: id}`` from ``{id: "name"}``, as ``DiTPipeline`` indexes it: every comma-separated name of a class."""
    labels = {}
    for key, value in (id2label or {}).items():
        for name in value.split(","):
            labels[name.strip()] = int(key)
    return dict(sorted(labels.items()))


class LMDConditioningMixin:
    """Class labels and prompts for :class:`~diffusers_lmd.LMDPipeline`, whose ``transformer``, ``tokenizer``,
    ``text_encoder``, ``head_scheduler`` and ``labels`` (:func:`label_index` of ``id2label``) these read."""

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Map class names (``id2label``'s values) to the ids ``class_labels`` takes."""
        names = [label] if isinstance(label, str) else list(label)
        if not self.labels:
            raise ValueError("This pipeline has no id2label, so class names cannot be looked up: pass integer labels.")
        for name in names:
            if name not in self.labels:
                raise ValueError(f"class_labels: {name!r} is not a class name; choose from {list(self.labels)}.")
        return [self.labels[name] for name in names]

    def prepare_class_labels(
        self,
        class_labels: ClassLabelInput,
        batch_size: int,
        device: torch.device,
        do_classifier_free_guidance: bool,
        num_images_per_prompt: int = 1,
    ) -> torch.Tensor | None:
        """``B x num_images_per_prompt`` label ids on ``device``, each label's images together (names looked up with
        :meth:`get_label_ids`; one label serves the whole batch; none = the null class), then, with guidance, as many
        null-class rows; None for a model without classes."""
        num_classes = self.transformer.config.num_class_embeds
        if num_classes is None:
            return None
        if class_labels is None:
            labels = torch.full((batch_size * num_images_per_prompt,), num_classes, device=device, dtype=torch.long)
        else:
            if isinstance(class_labels, torch.Tensor) and (class_labels.is_floating_point() or class_labels.ndim > 1):
                raise ValueError(f"class_labels must be integers, one per image, got a {class_labels.dtype} tensor.")
            ids = [self.get_label_ids(x)[0] if isinstance(x, str) else x for x in _as_list(class_labels)]
            valid = [isinstance(x, numbers.Integral) and not isinstance(x, bool) and 0 <= x < num_classes for x in ids]
            if not ids or not all(valid):
                raise ValueError(
                    f"class_labels must be ids in [0, {num_classes}) or names in id2label, got {class_labels!r}."
                )
            labels = _broadcast("class_labels", torch.tensor([int(x) for x in ids], device=device), batch_size)
            labels = labels.repeat_interleave(num_images_per_prompt)
        if do_classifier_free_guidance:
            labels = torch.cat([labels, torch.full_like(labels, num_classes)])
        return labels

    def encode_prompt(
        self,
        prompt: PromptInput,
        batch_size: int,
        device: torch.device,
        do_classifier_free_guidance: bool,
        negative_prompt: PromptInput = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Text embeddings and attention mask (``B x S x D``, ``B x S``) of ``prompt`` or of the given embeddings,
        broadcast to the batch (the empty prompt when neither is given) and repeated ``num_images_per_prompt`` times
        each, then, with guidance, as many rows of the negative prompt's; ``(None, None)`` for a transformer without
        text conditioning."""
        if self.transformer.config.cross_attention_dim is None:
            return None, None
        branches = [("prompt", prompt, prompt_embeds, prompt_attention_mask)]
        if do_classifier_free_guidance:
            branches.append(
                ("negative_prompt", negative_prompt, negative_prompt_embeds, negative_prompt_attention_mask)
            )
        embeds, masks = [], []
        for name, text, text_embeds, text_mask in branches:
            if text_embeds is None:
                texts = [NULL_PROMPT] if text is None else _as_list(text)
                text_embeds, text_mask = encode_text(self.tokenizer, self.text_encoder, texts, device)
            if text_mask is None:
                text_mask = torch.ones(text_embeds.shape[:2], dtype=torch.long)
            text_embeds = _broadcast(name, text_embeds.to(device, self.transformer.dtype), batch_size)
            text_mask = _broadcast(f"{name} attention masks", text_mask.to(device), batch_size)
            embeds.append(text_embeds.repeat_interleave(num_images_per_prompt, dim=0))
            masks.append(text_mask.repeat_interleave(num_images_per_prompt, dim=0))
        if embeds[-1].shape != embeds[0].shape:
            raise ValueError(
                f"prompt_embeds {tuple(embeds[0].shape)} and negative_prompt_embeds {tuple(embeds[1].shape)} must "
                "have the same shape to run in one batch."
            )
        return torch.cat(embeds), torch.cat(masks)

    def default_guidance_scale(self, image, class_labels: ClassLabelInput) -> float:
        """The ``guidance_scale`` of a call that sets none: the pipeline's ``sampling_defaults`` (else
        :data:`DEFAULT_GUIDANCE_SCALE`) for class-conditional
        generation by a model trained with label dropout (its config says its null class learned), as
        ``DiTPipeline`` guides by default; otherwise 1 (none): with an ``image``, without class labels, and for
        text models, whose config does not record whether the empty prompt was trained."""
        if image is not None or class_labels is None or not self.transformer.config.class_dropout_prob:
            return 1.0
        return (self.config.get("sampling_defaults") or {}).get("guidance_scale", DEFAULT_GUIDANCE_SCALE)

    def checked_sampling_defaults(self, defaults: dict | None) -> dict | None:
        """``sampling_defaults`` checked against this pipeline's transformer (:func:`check_sampling_defaults`)."""
        return check_sampling_defaults(defaults, self.transformer)

    def default_guidance_schedule(self) -> str:
        """The ``guidance_schedule`` of a call that sets none: the pipeline's ``sampling_defaults``, else constant."""
        return (self.config.get("sampling_defaults") or {}).get("guidance_schedule", "constant")

    def default_temperature(self, prediction: str) -> float:
        """The sampling head's temperature of a call that sets none: the pipeline's ``sampling_defaults``, else 1."""
        if prediction != "sample":
            return 1.0
        return (self.config.get("sampling_defaults") or {}).get("temperature", 1.0)

    def check_prediction(
        self,
        prediction: str | None,
        temperature: float | None = None,
        num_head_inference_steps: int | None = None,
        choice_temperature: float | None = None,
    ) -> str:
        """``prediction`` resolved (``"sample"`` when the transformer has a sampling head, else ``"mean"``), or a
        ``ValueError`` naming what the transformer lacks or a sampling option the mean would ignore."""
        has_sampler = self.transformer.config.head_type in ("diffusion", "categorical")
        has_mean = self.transformer.decoder_pred is not None
        if prediction is None:
            return "sample" if has_sampler else "mean"
        if prediction not in ("sample", "mean"):
            raise ValueError(f"prediction must be 'sample' or 'mean', got {prediction!r}.")
        if prediction == "mean" and not has_mean:
            raise ValueError(
                "prediction='mean' needs an MSE head, and this transformer has only its sampling head: train it with "
                "mse_loss_weight > 0 for both, or use prediction='sample'."
            )
        if prediction == "sample" and not has_sampler:
            raise ValueError(
                "prediction='sample' needs a sampling head (head_type='diffusion' or 'categorical'); this transformer "
                "predicts the mean (head_type='mse'): use prediction='mean'."
            )
        sampling_options = temperature not in (None, 1.0) or num_head_inference_steps is not None
        sampling_options = sampling_options or choice_temperature is not None
        if prediction == "mean" and has_sampler and sampling_options:
            raise ValueError(
                "temperature, num_head_inference_steps and choice_temperature set the sampling head, which "
                "prediction='mean' does not use: "
                "drop them or use prediction='sample'."
            )
        return prediction

    def check_condition_inputs(
        self,
        class_labels: ClassLabelInput,
        prompt: PromptInput,
        negative_prompt: PromptInput,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        prompt_attention_mask: torch.Tensor | None,
        negative_prompt_attention_mask: torch.Tensor | None,
        guidance_scale: float,
        temperature: float,
        num_head_inference_steps: int | None,
        choice_temperature: float | None = None,
    ) -> None:
        """Raise a ``ValueError`` naming the first condition, guidance or sampling argument that cannot work."""
        config = self.transformer.config
        if guidance_scale < 1:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale}.")
        _check_sampling(
            self.transformer, self.head_scheduler, temperature, num_head_inference_steps, choice_temperature
        )
        classes, text = config.num_class_embeds is not None, config.cross_attention_dim is not None
        if class_labels is not None and not classes:
            raise ValueError(
                "class_labels were given, but the transformer is not class-conditional (num_class_embeds=None): "
                "call the pipeline without class_labels."
            )
        texts = {"prompt": prompt, "negative_prompt": negative_prompt, "prompt_embeds": prompt_embeds}
        texts["negative_prompt_embeds"] = negative_prompt_embeds
        given = [name for name, value in texts.items() if value is not None]
        if given and not text:
            raise ValueError(
                f"{given[0]} was given, but the transformer is not text-conditional (cross_attention_dim=None)."
            )
        if text:
            masks = {"prompt": prompt_attention_mask, "negative_prompt": negative_prompt_attention_mask}
            can_encode_text = self.tokenizer is not None and self.text_encoder is not None
            _check_text(config.cross_attention_dim, can_encode_text, texts, masks, guidance_scale)
        if guidance_scale > 1:
            if not (classes or text):
                raise ValueError(
                    f"guidance_scale={guidance_scale} needs a class- or text-conditional transformer; this one is "
                    "unconditional, so use guidance_scale=1."
                )
            if class_labels is None and prompt is None and prompt_embeds is None:
                raise ValueError(
                    f"guidance_scale={guidance_scale} needs a condition to guide towards: pass class_labels or a "
                    "prompt (without one every image gets the unconditional input)."
                )


def _check_sampling(
    transformer: LMDModel,
    head_scheduler: SchedulerMixin | None,
    temperature: float,
    num_head_inference_steps,
    choice_temperature: float | None = None,
) -> None:
    head_type = transformer.config.head_type
    diffusion, categorical = head_type == "diffusion", head_type == "categorical"
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if head_type == "mse" and (temperature != 1.0 or num_head_inference_steps is not None):
        raise ValueError(
            "temperature and num_head_inference_steps set a sampling head's draws; this transformer has "
            "head_type='mse', which predicts the mean: leave them unset."
        )
    if categorical and num_head_inference_steps is not None:
        raise ValueError(
            "num_head_inference_steps sets the diffusion head's steps; this transformer has head_type='categorical', "
            "which draws codes in one go: leave it unset."
        )
    if choice_temperature is not None and (not categorical or choice_temperature < 0):
        raise ValueError(
            f"choice_temperature={choice_temperature} randomises the categorical head's reveal order: it must be >= 0 "
            f"and needs head_type='categorical' (this transformer has {head_type!r})."
        )
    if diffusion:
        most = transformer.config.diffusion_num_train_timesteps - 1
        if num_head_inference_steps is not None and not 1 <= num_head_inference_steps <= most:
            raise ValueError(
                f"num_head_inference_steps must lie in [1, {most}] (below the head's training timesteps), got "
                f"{num_head_inference_steps}."
            )
        _check_head_scheduler(transformer, head_scheduler)
        if temperature != 1.0 and not takes_variance_noise(head_scheduler):
            raise ValueError(
                f"temperature={temperature} needs a head_scheduler that takes variance_noise (DDIMScheduler); "
                f"{type(head_scheduler).__name__} draws its noise itself. Use temperature=1, or "
                "pipe.head_scheduler = DDIMScheduler.from_config(pipe.head_scheduler.config)."
            )


def _check_head_scheduler(transformer: LMDModel, scheduler: SchedulerMixin | None) -> None:
    """The head's sampler must use the noise schedule the head was trained with."""
    trained = transformer.diffusion_head.noise_scheduler
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if (
        alphas is None
        or alphas.shape != trained.alphas_cumprod.shape
        or not torch.allclose(alphas.cpu(), trained.alphas_cumprod.cpu())
    ):
        raise ValueError(
            f"head_scheduler ({type(scheduler).__name__}) does not use the diffusion head's training noise "
            "schedule: build it with DDIMScheduler.from_config(pipe.transformer.diffusion_head.noise_scheduler"
            ".config)."
        )
    if scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError("head_scheduler must have prediction_type='epsilon': the diffusion head predicts noise.")


def _check_text(dim: int, can_encode_text: bool, texts: dict, masks: dict, guidance_scale: float) -> None:
    for name in ("prompt", "negative_prompt"):
        if texts[name] is not None and texts[f"{name}_embeds"] is not None:
            raise ValueError(f"Pass either {name} or {name}_embeds, not both.")
        value = texts[name]
        if value is not None and not (isinstance(value, str) or all(isinstance(p, str) for p in value)):
            raise ValueError(f"{name} must be a string or a list of strings, got {value!r}.")
    needs_encoder = texts["prompt_embeds"] is None or (guidance_scale > 1 and texts["negative_prompt_embeds"] is None)
    if needs_encoder and not can_encode_text:
        raise ValueError(
            "This pipeline has no tokenizer and text_encoder, so it cannot encode a prompt (nor the empty "
            "prompt of the unconditional branch): pass prompt_embeds (and negative_prompt_embeds with "
            "guidance_scale > 1), or build the pipeline with a tokenizer and text_encoder."
        )
    for name, mask in masks.items():
        embeds = texts[f"{name}_embeds"]
        if embeds is not None and (embeds.ndim != 3 or embeds.shape[-1] != dim):
            raise ValueError(
                f"{name}_embeds must be batch x text tokens x {dim} (the transformer's cross_attention_dim), "
                f"got shape {tuple(embeds.shape)}."
            )
        if mask is not None and (embeds is None or tuple(mask.shape) != tuple(embeds.shape[:2])):
            raise ValueError(
                f"{name}_attention_mask goes with {name}_embeds and must be batch x text tokens "
                f"({None if embeds is None else tuple(embeds.shape[:2])}), got {tuple(mask.shape)}."
            )
