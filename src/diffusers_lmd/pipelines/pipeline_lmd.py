"""``LMDPipeline``: reconstruction, inpainting and generation with a Latent Masking Diffusion model (method.md §4).

Every task completes a partly masked latent: reconstruction and inpainting start from an encoded image with some
tokens masked, generation from a fully masked latent. One loop serves all three: the model predicts the masked
tokens and ``LMDMaskScheduler.step`` reveals a share of them, keeping visible latents exactly, until none is
masked (one step: method.md §4's one-shot reconstruction). A diffusion head samples only the tokens the scheduler picks
to reveal; a categorical head draws a code for every masked position and the scheduler reveals the most confident
tokens (MaskGIT). Latents stay in the projector's dtype; the transformer gets a copy in its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline, VQModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from transformers import CLIPTextModel, CLIPTokenizer

from ..masking import patchify
from ..models import LMDModel
from ..models.categorical_head import DEFAULT_CHOICE_TEMPERATURE
from ..projector import check_compatible, downsample_factor
from ..schedulers import LMDMaskScheduler
from .conditioning import (
    ClassLabelInput,
    LMDConditioningMixin,
    PromptInput,
    check_guidance_schedule,
    condition_count,
    label_index,
    step_guidance_scale,
)
from .hub_utils import LMDHubMixin
from .image_inputs import LMDImageInputsMixin
from .pipeline_output import LMDPipelineOutput
from .sampling import categorical_reveal_step, check_codebook_matches, diffusion_reveal_step

DEFAULT_GENERATION_STEPS = 10
DEFAULT_HEAD_INFERENCE_STEPS = 50
Generator = torch.Generator | list[torch.Generator] | None
StepCallback = Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks | None


class LMDPipeline(LMDHubMixin, LMDImageInputsMixin, LMDConditioningMixin, DiffusionPipeline):
    """Pipeline for image reconstruction, inpainting and generation with Latent Masking Diffusion.

    The projector ``vae`` encodes the image, the ``transformer`` predicts the masked latent patches from the
    visible ones, and the projector decodes the result. Generation starts from a fully masked latent that the
    ``scheduler`` reveals over several steps. A class- or text-conditional transformer takes ``class_labels`` or a
    ``prompt``, with classifier-free guidance; one with a diffusion head samples the masked patches, one with a
    categorical head (over a ``VQModel``'s codebook) samples their codes.

    This model inherits from [`DiffusionPipeline`] (loading, devices, offloading); its ``save_pretrained`` and
    ``push_to_hub`` add ``lmd_pipeline.py`` and a model card (:mod:`~diffusers_lmd.pipelines.hub_utils`).

    Args:
        vae: the frozen projector, a ``VQModel`` or ``AutoencoderKL`` whose config holds the latent
            ``scaling_factor`` (and ``shift_factor``) the transformer was trained with.
        transformer: the ``LMDModel``; its ``in_channels`` must equal the projector's latent channels.
        scheduler: the ``LMDMaskScheduler`` that decides how many masked tokens each step reveals.
        tokenizer / text_encoder: a text-conditional transformer's frozen ``CLIPTokenizer`` and ``CLIPTextModel``;
            ``None`` for class- and unconditional pipelines.
        head_scheduler: ``DDIMScheduler`` or ``DDPMScheduler`` that samples with a diffusion head; default: a
            ``DDIMScheduler`` on the head's training noise schedule. ``None`` for an MSE head.
        id2label: class names of a class-conditional transformer, ``{id: "name"}`` (several names of one class
            separated by commas), saved in ``model_index.json``; :meth:`get_label_ids` maps names to ids.
        sampling_defaults: the defaults of this pipeline's calls, chosen for its model (as a transformers model's
            ``generation_config.json`` carries its temperature): ``{"guidance_scale": 3.0, "temperature": 0.8}``,
            either key optional; saved in ``model_index.json``. An argument given to a call always wins.
    """

    # diffusers' order for an image-to-image pipeline: the transformer is offloaded when the projector decodes.
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["tokenizer", "text_encoder", "head_scheduler"]
    _callback_tensor_inputs = ["latents", "mask"]
    _guidance_scale: float = 1.0
    _num_timesteps: int = 0
    _interrupt: bool = False

    def __init__(
        self,
        vae: VQModel | AutoencoderKL,
        transformer: LMDModel,
        scheduler: LMDMaskScheduler,
        tokenizer: CLIPTokenizer | None = None,
        text_encoder: CLIPTextModel | None = None,
        head_scheduler: DDIMScheduler | DDPMScheduler | None = None,
        id2label: dict | None = None,
        sampling_defaults: dict | None = None,
    ):
        super().__init__()
        check_compatible(vae, transformer)
        if (tokenizer is None) != (text_encoder is None):
            raise ValueError("Pass both tokenizer and text_encoder (for a text-conditional transformer), or neither.")
        if transformer.config.head_type == "categorical":
            check_codebook_matches(vae, transformer)
        if head_scheduler is None and transformer.diffusion_head is not None:
            head_scheduler = DDIMScheduler.from_config(transformer.diffusion_head.noise_scheduler.config)
        self.register_modules(
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            head_scheduler=head_scheduler,
        )
        self.register_to_config(id2label={str(k): v for k, v in id2label.items()} if id2label else None)
        self.register_to_config(sampling_defaults=self.checked_sampling_defaults(sampling_defaults))
        self.labels = label_index(id2label)
        factor = downsample_factor(vae)
        # Inputs are always images, never latents: channel count 0 keeps the processor from passing one through.
        self.image_processor = VaeImageProcessor(vae_scale_factor=factor, vae_latent_channels=0)
        self.mask_processor = VaeImageProcessor(
            vae_scale_factor=factor,
            vae_latent_channels=0,
            do_normalize=False,
            do_binarize=True,
            do_convert_grayscale=True,
        )

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance weight of the current (or last) call."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        """Unmasking steps of the current (or last) call, as diffusers' pipelines report them."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """``True`` once ``pipe._interrupt`` was set during a call: the remaining steps are skipped."""
        return self._interrupt

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput | None = None,
        mask_image: PipelineImageInput | None = None,
        mask_ratio: float | None = None,
        batch_size: int | None = None,
        num_inference_steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: Generator = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        class_labels: ClassLabelInput = None,
        prompt: PromptInput = None,
        negative_prompt: PromptInput = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        temperature: float | None = None,
        num_head_inference_steps: int | None = None,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        prediction: str | None = None,
        choice_temperature: float | None = None,
    ) -> LMDPipelineOutput | tuple:
        """Reconstruct (``image``), inpaint (``image`` + ``mask_image``) or generate (``batch_size`` or conditions).

        Args:
            image: PIL image(s), ``H x W x C`` / ``B x H x W x C`` arrays or ``C x H x W`` / ``B x C x H x W``
                tensors in ``[0, 1]``; grayscale and RGBA are converted to RGB. A side that is not a multiple of
                ``pipe.patch_pixels`` is rounded down to one, keeping the aspect ratio (``output.image_size`` says
                which size was used).
            mask_image: pixel mask of the same size as ``image``, white (>= 0.5, as diffusers binarises masks) =
                redo; a latent patch is predicted if any of its pixels is white. One mask for the batch, or one per
                image.
            mask_ratio: share of latent patches masked at random, in ``[0, 1]`` (default 0.75, MAE's ratio);
                0 gives the projector's own reconstruction.
            batch_size: number of images to generate when no ``image`` is given; default: one per class label or
                prompt.
            num_inference_steps: unmasking steps; default 1 with an image (one-shot prediction of every
                masked patch) and 10 for generation.
            height, width: working size in pixels, multiples of ``pipe.patch_pixels``; default: the image's
                own size, or the model's resolution for generation.
            generator: a ``torch.Generator`` for reproducible masks and reveal orders, or one per image so
                that a batch gives the same images as one call per image.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the completed normalised latents).
            return_dict: return an [`LMDPipelineOutput`] rather than a tuple ``(images, mask, image_size)``.
            callback_on_step_end: called after each step as ``callback(pipe, step, timestep, callback_kwargs)``;
                the tensors it returns (``"latents"``, ``"mask"``) replace the pipeline's. Setting
                ``pipe._interrupt = True`` there stops after that step (``pipe.interrupt``, ``pipe.num_timesteps``
                as in diffusers' pipelines).
            callback_on_step_end_tensor_inputs: which of ``"latents"`` and ``"mask"`` the callback receives.
            class_labels: for a class-conditional transformer, class ids in ``[0, num_class_embeds)`` or names of
                ``id2label`` (see :meth:`get_label_ids`): one per image, or one for all; none = the null class
                (unconditional).
            prompt: for a text-conditional transformer, a prompt or one per image; none = the empty prompt
                (unconditional). Needs the pipeline's ``tokenizer`` and ``text_encoder``.
            negative_prompt: the unconditional branch of guidance (default: the empty prompt).
            prompt_embeds / negative_prompt_embeds: precomputed text embeddings (``B x S x cross_attention_dim``)
                instead of ``prompt`` / ``negative_prompt``, with optional ``B x S`` attention masks
                ``prompt_attention_mask`` / ``negative_prompt_attention_mask`` (1 = real token).
            guidance_scale: classifier-free guidance weight ``w`` (``uncond + w (cond - uncond)``), used when > 1;
                the conditional and unconditional inputs run in one batch. Default: 3 for class-conditional
                generation by a model trained with label dropout (as ``DiTPipeline`` guides by default); otherwise
                1, as with an ``image`` or a prompt (a text model's config does not say whether its empty prompt
                was trained).
            guidance_schedule: how ``guidance_scale`` moves over the reveal steps: ``"constant"`` (the default
                unless ``sampling_defaults`` says otherwise), or ``"linear"`` (MAR's): ``1 + (w - 1) r`` at a step
                after which a share ``r`` of the tokens is revealed, so the first steps, which lay out the image,
                are guided least and the samples vary more.
            temperature: the sampling head's temperature (> 0): the diffusion head scales the noise each sampling step
                adds (MAR's temperature); the categorical head divides its logits by it before drawing codes.
                Default: the pipeline's ``sampling_defaults``, else 1 (the model's own distribution).
            num_head_inference_steps: diffusion head only: ``head_scheduler`` steps per sampled token (default 50).
            num_images_per_prompt: outputs per input image, class label or prompt (per image for unconditional
                generation), grouped: the batch is ``num_images_per_prompt`` times the inputs', as in diffusers.
            latents: diffusion head only: the head's starting noise for every token, ``B x C x h x w`` (``B``
                output images, the latent's channels and size); each token starts from its patch when it is sampled.
                Default: drawn from ``generator``.
            prediction: how masked tokens are filled: ``"sample"`` draws them with the transformer's sampling head
                (diffusion or categorical), sharp and varied; ``"mean"`` takes the MSE head's prediction, each
                token's expected value, which scores the best PSNR but blurs where the context leaves a token
                uncertain. Default: the sampling head when the transformer has one, else the mean; ``"mean"`` needs
                an MSE head (a model trained with both, ``mse_loss_weight > 0``, offers both).
            choice_temperature: categorical head only: MaskGIT's randomness of the reveal order. Each step draws a
                code for every masked position (guided logits ``uncond + w (cond - uncond)`` over ``temperature``)
                and reveals the tokens whose drawn codes are the most likely (the sum of their log-probabilities),
                the scores perturbed by Gumbel noise of scale ``choice_temperature * t / n`` (``n`` steps, ``t``
                counting down to 0); default 4.5 (MaskGIT's), 0 = strictly by confidence. The revealed tokens take
                their codes' latents.

        Examples:
            ```py
            >>> import torch
            >>> from PIL import Image
            >>> from diffusers_lmd import LMDPipeline

            >>> pipe = LMDPipeline.from_pretrained("path/to/lmd-pipeline")
            >>> image = Image.open("photo.png")

            >>> # Reconstruction: mask 75% of the latent patches at random and predict them.
            >>> out = pipe(image=image, mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
            >>> out.images[0].save("reconstruction.png")
            >>> # Inpainting: white pixels of the mask are redone.
            >>> out = pipe(image=image, mask_image=Image.open("mask.png"))
            >>> # Generation by progressive unmasking from a fully masked latent.
            >>> out = pipe(batch_size=4, num_inference_steps=10, generator=torch.Generator().manual_seed(0))
            >>> # A class-conditional model with a diffusion head: one image per class name, guided.
            >>> out = pipe(class_labels=["Sneaker", "Bag"], guidance_scale=3.0, num_inference_steps=16)
            ```
        """
        # 0. Defaults: one step with an image; for generation, one image per class label or prompt, guided
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale(image, class_labels)
        guidance_schedule = guidance_schedule or self.default_guidance_schedule()
        check_guidance_schedule(guidance_schedule)
        prediction = self.check_prediction(prediction, temperature, num_head_inference_steps, choice_temperature)
        if temperature is None:
            temperature = self.default_temperature(prediction)
        if num_inference_steps is None:
            num_inference_steps = 1 if image is not None else DEFAULT_GENERATION_STEPS
        if image is None and batch_size is None:
            batch_size = condition_count(class_labels, prompt, prompt_embeds)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs
        self._interrupt = False
        self.check_inputs(
            image,
            mask_image,
            mask_ratio,
            batch_size,
            num_inference_steps,
            height,
            width,
            output_type,
            callback_on_step_end_tensor_inputs,
            num_images_per_prompt,
        )
        self.check_condition_inputs(
            class_labels,
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
            guidance_scale,
            temperature,
            num_head_inference_steps,
            choice_temperature,
        )
        self._guidance_scale = guidance_scale
        device = self._execution_device

        # 2. Preprocess the image: its batch (or the conditions') times num_images_per_prompt is the call's
        if image is not None:
            images, size = self.prepare_image(image, height, width)
            batch_size, images = images.shape[0], images.repeat_interleave(num_images_per_prompt, dim=0)
        else:
            images, size = None, (height, width) if height is not None else self.default_image_size
        num_images = batch_size * num_images_per_prompt
        self.check_latents(latents, num_images, size)

        # 3. Encode the conditions; with guidance, the unconditional rows (null class, negative prompt) follow
        cfg = self.do_classifier_free_guidance
        class_labels = self.prepare_class_labels(class_labels, batch_size, device, cfg, num_images_per_prompt)
        prompt_embeds, prompt_attention_mask = self.encode_prompt(
            prompt,
            batch_size,
            device,
            cfg,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
            num_images_per_prompt,
        )
        conditions = dict(
            class_labels=class_labels, encoder_hidden_states=prompt_embeds, encoder_attention_mask=prompt_attention_mask
        )

        # 4. Prepare the latents and the token mask (1 = to predict)
        head_noise = None if latents is None else patchify(latents, self.transformer.config.patch_size)
        latents, mask = self.prepare_latents(
            images, mask_image, mask_ratio, num_images, size, generator, device, num_images_per_prompt
        )
        initial_mask = mask

        # 5. Set the reveal steps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 6. Unmasking loop
        sampling = prediction == "sample"
        head = self.transformer.diffusion_head if sampling else None
        categorical = sampling and self.transformer.config.head_type == "categorical"
        if choice_temperature is None:
            choice_temperature = DEFAULT_CHOICE_TEMPERATURE
        head_steps = num_head_inference_steps or DEFAULT_HEAD_INFERENCE_STEPS
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue  # as diffusers' pipelines do: the remaining steps are skipped
                model_input, model_mask = latents.to(self.transformer.dtype), mask
                scale = step_guidance_scale(guidance_scale, guidance_schedule, self.scheduler.masked_fraction(t))
                if self.do_classifier_free_guidance:
                    model_input, model_mask = torch.cat([model_input] * 2), torch.cat([mask] * 2)

                if categorical:
                    # draw a code for every masked position, reveal the most confident tokens (MaskGIT)
                    self._onload(self.transformer)  # offload hooks wrap forward(), and this is not forward()
                    features = self.transformer.forward_features(model_input, model_mask, **conditions)
                    latents, mask = categorical_reveal_step(
                        self.transformer, self.scheduler, features, t, latents, mask, generator,
                        scale, temperature, choice_temperature,
                    )  # fmt: skip
                elif head is None:
                    # predict every masked token's mean (guided), then let the scheduler reveal a share of them
                    predicted = self.transformer(
                        model_input, mask=model_mask, return_dict=False, return_loss=False, **conditions
                    )[0].to(latents.dtype)
                    if self.do_classifier_free_guidance:
                        cond, uncond = predicted.chunk(2)
                        predicted = uncond + scale * (cond - uncond)
                    latents, mask = self.scheduler.step(
                        predicted, t, latents, mask=mask, generator=generator, return_dict=False
                    )
                else:
                    # choose the tokens this step reveals, then sample only those with the diffusion head (guided)
                    revealed_mask = self.scheduler.reveal(t, mask, generator)
                    self._onload(self.transformer)  # offload hooks wrap forward(), and this is not forward()
                    features = self.transformer.forward_features(model_input, model_mask, **conditions)
                    latents = diffusion_reveal_step(
                        self.transformer, self.head_scheduler, features, latents, mask, revealed_mask, generator,
                        scale, temperature, head_steps, head_noise,
                    )  # fmt: skip
                    mask = revealed_mask

                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "mask": mask}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    mask = callback_outputs.pop("mask", mask)
                progress_bar.update()

        # 7. Decode and post-process
        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(self.decode(latents), output_type=output_type)
        self.maybe_free_model_hooks()

        output = LMDPipelineOutput(images=images, mask=initial_mask, image_size=tuple(size))
        return output if return_dict else output.to_tuple()
