"""The unmasking loop of the LMD pipelines: predict (or sample) masked tokens, let the scheduler reveal some, repeat.

Latents stay in the projector's dtype throughout: the transformer gets a copy in its own dtype and its prediction
is taken only where tokens are masked, so visible latents are exactly the encoded ones whatever the transformer's
precision (a bf16 transformer beside an fp32 projector included). As in diffusers' pipelines, setting
``pipe._interrupt = True`` (from a ``callback_on_step_end``) stops the loop after the current step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..masking import patchify, unpatchify
from ..models.diffusion_head import sample_tokens
from .conditioning import Conditions

DEFAULT_HEAD_INFERENCE_STEPS = 50
Generator = torch.Generator | list[torch.Generator] | None
StepCallback = Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks | None


class LMDUnmaskingMixin:
    """:meth:`unmask` and its steps, for a pipeline with ``transformer``, ``scheduler`` and ``head_scheduler``."""

    _guidance_scale: float = 1.0
    _num_timesteps: int = 0
    _interrupt: bool = False

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance weight of the current (or last) call."""
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """Unmasking steps of the current (or last) call, as diffusers' pipelines report them."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """``True`` once ``pipe._interrupt`` was set during a call: the remaining steps are skipped."""
        return self._interrupt

    def _transformer_input(self, latents: torch.Tensor, mask: torch.Tensor, guided: bool):
        """The transformer's copy of the latents (in its dtype) and mask, doubled for guidance."""
        model_input = latents.to(self.transformer.dtype)
        if guided:
            return torch.cat([model_input] * 2), torch.cat([mask] * 2)
        return model_input, mask

    def _reveal(
        self, model_output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor, generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One scheduler step; per sample with a list of generators, so a batch equals its single runs."""
        if not isinstance(generator, list):
            return self.scheduler.step(model_output, t, latents, mask=mask, generator=generator, return_dict=False)
        rows = [
            self.scheduler.step(
                model_output[i : i + 1], t, latents[i : i + 1], mask=mask[i : i + 1], generator=g, return_dict=False
            )
            for i, g in enumerate(generator)
        ]
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])

    def _reveal_tokens(self, t: torch.Tensor, mask: torch.Tensor, generator: Generator) -> torch.Tensor:
        """The mask after this step (``LMDMaskScheduler.reveal``), per image with a list of generators."""
        if not isinstance(generator, list):
            return self.scheduler.reveal(t, mask, generator)
        return torch.cat([self.scheduler.reveal(t, mask[i : i + 1], g) for i, g in enumerate(generator)])

    def _mse_step(
        self,
        latents: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        conditions: Conditions,
        guidance_scale: float,
        generator: Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict every masked token's mean (guided), then let the scheduler reveal a share of them."""
        guided = guidance_scale > 1
        model_input, model_mask = self._transformer_input(latents, mask, guided)
        kwargs = conditions.model_kwargs()
        prediction = self.transformer(model_input, mask=model_mask, return_dict=False, return_loss=False, **kwargs)[0]
        prediction = prediction.to(latents.dtype)
        if guided:
            cond, uncond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        return self._reveal(prediction, t, latents, mask, generator)

    def _diffusion_step(
        self,
        latents: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        conditions: Conditions,
        guidance_scale: float,
        generator: Generator,
        temperature: float,
        num_head_inference_steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose the tokens this step reveals, then sample only those with the diffusion head (guided)."""
        new_mask = self._reveal_tokens(t, mask, generator)
        picked = (mask > 0) & (new_mask == 0)
        model_input, model_mask = self._transformer_input(latents, mask, guidance_scale > 1)
        self._onload(self.transformer)  # offload hooks wrap forward(), and this is not forward()
        features = self.transformer.forward_features(model_input, model_mask, **conditions.model_kwargs())
        tokens = sample_tokens(
            self.transformer.diffusion_head,
            features,
            picked,
            self.head_scheduler,
            num_head_inference_steps,
            generator,
            temperature,
            guidance_scale,
        )
        patches = patchify(latents, self.transformer.config.patch_size)
        patches[picked] = tokens.to(patches.dtype)
        return unpatchify(patches, self.transformer.config.patch_size, *latents.shape[2:]), new_mask

    def unmask(
        self,
        latents: torch.Tensor,
        mask: torch.Tensor,
        num_inference_steps: int,
        generator: Generator = None,
        callback_on_step_end: StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        conditions: Conditions | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        num_head_inference_steps: int = DEFAULT_HEAD_INFERENCE_STEPS,
    ) -> torch.Tensor:
        """Predict (or sample) and reveal masked tokens over ``num_inference_steps`` steps; the last reveals all.

        Interrupted (``pipe._interrupt = True``), it returns the latents after the last completed step: tokens not
        yet revealed hold the latest prediction (MSE head) or the mean latent, 0 (diffusion head).
        """
        conditions = conditions or Conditions()
        self._guidance_scale = guidance_scale
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        self._num_timesteps = len(self.scheduler.timesteps)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(self.scheduler.timesteps):
                if self.interrupt:
                    continue  # as diffusers' pipelines do: the remaining steps are skipped
                if self.transformer.diffusion_head is None:
                    latents, mask = self._mse_step(latents, mask, t, conditions, guidance_scale, generator)
                else:
                    latents, mask = self._diffusion_step(
                        latents, mask, t, conditions, guidance_scale, generator, temperature, num_head_inference_steps
                    )
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "mask": mask}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    mask = callback_outputs.pop("mask", mask)
                progress_bar.update()
        return latents
