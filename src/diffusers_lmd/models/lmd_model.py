"""``LMDModel``: the latent masked autoencoder of Latent Masking Diffusion (method.md §2), optionally conditional.

The forward pass reads as MAE's named steps: ``patchify`` the latent, ``mask_tokens`` (random or given),
``forward_encoder`` on the visible tokens only, ``forward_decoder`` over the whole grid with the
position embedding *subtracted* (spatial position recall), then a head and its loss on masked patches:
the MSE head of ``L_LIR`` (the default), a per-token diffusion head that can sample (method.md §9), or a
categorical head over a ``VQModel``'s codebook (MaskGIT / Muse style, ``categorical_head.py``).
A class enters as condition tokens the encoder always sees; a text encoder's embeddings enter through
cross-attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..masking import (
    check_patchable,
    mask_tokens,
    num_masked_tokens,
    patchify,
    random_mask,
    unpatchify,
)
from .attention_processor import LMDAttention, set_attention_slice
from .categorical_head import CategoricalHeadMixin, categorical_loss, code_targets, codes_to_latents, quantise
from .conditioning import ClassConditionTokens, text_context_mask
from .diffusion_head import DiffusionHead, check_head_options
from .embeddings import sincos_2d_position_embedding
from .input_checks import check_model_inputs
from .legacy_keys import LegacyAttentionKeysMixin
from .presets import LMD_PRESETS
from .transformer_block import TransformerBlock


@dataclass
class LMDModelOutput(BaseOutput):
    """Output of :class:`LMDModel`.

    Args:
        sample: the MSE head's predicted latent, ``B x C x H x W`` (every position, visible ones included);
            ``None`` for a model whose only head is the diffusion head (the pipelines sample with it); for one whose
            only head is the categorical head, the latents of each position's most likely code.
        mask: the token mask used, ``B x L``, 1 = masked.
        loss: the training loss over the masked patches (a scalar): ``L_LIR``'s MSE, or the diffusion head's
            noise-prediction loss, or the categorical head's cross-entropy (either plus ``mse_loss_weight`` x the
            MSE); ``None`` with ``return_loss=False``.
    """

    sample: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class LMDModel(
    LegacyAttentionKeysMixin, CategoricalHeadMixin, ModelMixin, ConfigMixin, AttentionMixin, PeftAdapterMixin
):
    """A ViT masked autoencoder over projector latents, with fixed 2-D sin-cos position embeddings.

    The defaults are the unconditional MSE model of the paper; every other option is off by default, so
    configs and checkpoints saved before the options existed load unchanged. The blocks' attention is diffusers'
    (``attn_processors``, ``set_attn_processor``, ``fuse_qkv_projections``, ``set_attention_backend``, LoRA on
    ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0``); checkpoints with the former fused ``qkv`` / ``kv`` keys load.

    Args:
        sample_size: latent side (or ``(height, width)``) the model is built for; other sizes divisible by
            ``patch_size`` also work, since the position embedding is computed, not learned.
        in_channels: latent channels of the projector.
        patch_size: side of a latent patch; one token per patch.
        hidden_size / num_layers / num_attention_heads: encoder width, depth and heads.
        decoder_hidden_size / decoder_num_layers / decoder_num_attention_heads: the decoder's.
        mlp_ratio: MLP width as a multiple of the block width.
        norm_eps: LayerNorm epsilon.
        num_class_embeds: class-conditional with this many classes (label ``num_class_embeds`` is the null
            class, as in DiT); ``None``: no class input.
        class_dropout_prob: in training, the share of labels replaced by the null class, so one model serves
            both branches of classifier-free guidance (0.1 is usual).
        num_condition_tokens: encoder tokens carrying the class, never masked (MAR's buffer tokens).
        cross_attention_dim: text-conditional: width of ``encoder_hidden_states`` (e.g. a CLIP text model's
            hidden size), attended to by cross-attention in every decoder block; ``None``: no text input.
        encoder_cross_attention: put cross-attention in the encoder blocks too (the default: on Fashion-MNIST it
            lowered the fully masked loss, where generation starts, in every measured run; docs/training.md).
        head_type: ``"mse"`` (``L_LIR``: predicts the mean latent patch), ``"diffusion"`` (a per-token
            diffusion head that samples patches, MAR's design) or ``"categorical"`` (logits over a ``VQModel``'s
            codes for each of a token's ``p x p`` positions, MaskGIT's design; needs ``codebook_size`` and
            :meth:`set_codebook`).
        mse_loss_weight: with a sampling head (diffusion or categorical), also train an MSE head with this loss
            weight (0: none).
        diffusion_head_width / diffusion_head_layers: the diffusion head's MLP width (default: the decoder's)
            and residual blocks.
        diffusion_num_train_timesteps / diffusion_beta_schedule: its ``DDPMScheduler`` noise schedule.
        diffusion_batch_mul: noised copies of each token per training step (MAR: 4).
        codebook_size: with ``head_type="categorical"`` (and only then), the projector's number of codes ``K``
            (``vae.config.num_vq_embeddings``). The codes' latents are the persistent buffer ``codebook``
            (``K x in_channels``, in the normalised latent space, zeros until :meth:`set_codebook`), saved with the
            weights; the encoder sees latents quantised to it, in training as in sampling.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] = 28,
        in_channels: int = 4,
        patch_size: int = 2,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_attention_heads: int = 12,
        decoder_hidden_size: int = 512,
        decoder_num_layers: int = 8,
        decoder_num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        num_class_embeds: int | None = None,
        class_dropout_prob: float = 0.0,
        num_condition_tokens: int = 4,
        cross_attention_dim: int | None = None,
        encoder_cross_attention: bool = True,
        head_type: str = "mse",
        mse_loss_weight: float = 0.0,
        diffusion_head_width: int | None = None,
        diffusion_head_layers: int = 3,
        diffusion_num_train_timesteps: int = 1000,
        diffusion_beta_schedule: str = "squaredcos_cap_v2",
        diffusion_batch_mul: int = 4,
        codebook_size: int | None = None,
    ):
        super().__init__()
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        check_patchable(height, width, patch_size)
        check_head_options(head_type, mse_loss_weight, codebook_size)
        encoder_context = cross_attention_dim if encoder_cross_attention else None
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.class_embedding = None
        if num_class_embeds is not None:
            self.class_embedding = ClassConditionTokens(
                num_class_embeds, num_condition_tokens, hidden_size, class_dropout_prob
            )
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_attention_heads, mlp_ratio, norm_eps, encoder_context)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size, eps=norm_eps)

        self.decoder_embed = nn.Linear(hidden_size, decoder_hidden_size)  # the "latent linear layer"
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_hidden_size))
        self.decoder_blocks = nn.ModuleList(
            TransformerBlock(decoder_hidden_size, decoder_num_attention_heads, mlp_ratio, norm_eps, cross_attention_dim)
            for _ in range(decoder_num_layers)
        )
        self.decoder_norm = nn.LayerNorm(decoder_hidden_size, eps=norm_eps)
        token_dim = patch_size * patch_size * in_channels
        self.decoder_pred = None
        if head_type == "mse" or mse_loss_weight > 0:
            self.decoder_pred = nn.Linear(decoder_hidden_size, token_dim)
        self.diffusion_head = None
        if head_type == "diffusion":
            self.diffusion_head = DiffusionHead(
                token_dim,
                decoder_hidden_size,
                diffusion_head_width or decoder_hidden_size,
                diffusion_head_layers,
                diffusion_num_train_timesteps,
                diffusion_beta_schedule,
                norm_eps,
            )
        self.decoder_logits = None
        if head_type == "categorical":
            self.decoder_logits = nn.Linear(decoder_hidden_size, patch_size * patch_size * codebook_size)
            self.register_buffer("codebook", torch.zeros(codebook_size, in_channels))
            self._codebook_ready = False  # checked once non-zero; loading weights checks again
            self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_codebook_ready", False))
        self.gradient_checkpointing = False
        self._init_weights()
        # The SPE of the configured size, kept on the model's device so the hot path neither recomputes it nor
        # copies it host-to-device (a stream sync on CUDA) every step; other sizes are computed on demand.
        grid = self._pos_grid = (height // patch_size, width // patch_size)
        self.register_buffer("pos_embed", sincos_2d_position_embedding(hidden_size, *grid)[None], persistent=False)
        self.register_buffer(
            "decoder_pos_embed", sincos_2d_position_embedding(decoder_hidden_size, *grid)[None], persistent=False
        )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LMDModel:
        """Build a named architecture (``tiny``, ``small``, ``base``, ``base-gen``, ``large``) with overrides."""
        if name not in LMD_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(LMD_PRESETS)}.")
        return cls(**{**LMD_PRESETS[name], **overrides})

    def _init_weights(self) -> None:
        """MAE's initialisation: xavier for linear layers (attention's with MAE's fused fans) and the patch
        projection, small normal tokens."""
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        initialised = set()
        for module in self.modules():
            if module in initialised:
                continue
            if isinstance(module, LMDAttention):
                module.init_weights()
                initialised.update(module.modules())
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.diffusion_head is not None:
            self.diffusion_head.init_weights()

    def set_attention_slice(self, slice_size: str | int | None) -> None:
        """Attention a few heads at a time (``"auto"``: half, ``"max"``: one, an int: that many; ``None``: off);
        ``LMDPipeline.enable_attention_slicing`` calls it."""
        set_attention_slice(self, slice_size)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the image tokens in the encoder: CLS, then the condition tokens of a class model."""
        return 1 + (self.config.num_condition_tokens if self.class_embedding is not None else 0)

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens in a ``height x width`` latent."""
        return (height // self.patch_size) * (width // self.patch_size)

    def position_embedding(self, height: int, width: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        """The fixed SPE for a latent of this size, ``1 x L x dim``, on ``like``'s device and dtype."""
        p = self.patch_size
        grid = (height // p, width // p)
        if grid == self._pos_grid:
            for cached in (self.pos_embed, self.decoder_pos_embed):
                if cached.shape[2] == dim:
                    return cached.to(like.device, like.dtype)
        return sincos_2d_position_embedding(dim, *grid).to(like.device, like.dtype)[None]

    def check_inputs(self, latents: torch.Tensor, mask: torch.Tensor | None, mask_ratio: float | None) -> None:
        """Raise a ``ValueError`` naming what is wrong with the inputs of :meth:`forward` (see
        :func:`~diffusers_lmd.models.input_checks.check_model_inputs`)."""
        check_model_inputs(self, latents, mask, mask_ratio)

    def prepare_conditions(
        self,
        batch_size: int,
        class_labels: torch.Tensor | Sequence[int] | None,
        encoder_hidden_states: torch.Tensor | None,
        encoder_attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Check the conditions against the config; return the labels as a tensor and the text attention mask."""
        if class_labels is not None:
            if self.class_embedding is None:
                raise ValueError(
                    "class_labels were given, but this model has no class conditioning (num_class_embeds=None)."
                )
            class_labels = torch.as_tensor(class_labels, device=self.device)
            self.class_embedding.check_labels(class_labels, batch_size)
        dim = self.config.cross_attention_dim
        return class_labels, text_context_mask(encoder_hidden_states, encoder_attention_mask, dim, batch_size)

    mask_tokens = staticmethod(mask_tokens)  # masking.mask_tokens: the visible tokens of each row, in order

    def _run_blocks(
        self,
        blocks: nn.ModuleList,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for block in blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, attn_mask, context, context_mask)
            else:
                x = block(x, attn_mask, context, context_mask)
        return x

    def forward_encoder(
        self,
        latents: torch.Tensor,
        mask: torch.Tensor,
        num_visible: int | None = None,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embed, add the SPE, drop masked tokens, prepend CLS (and the class's condition tokens), run the blocks."""
        x = self.patch_embed(latents).flatten(2).transpose(1, 2)
        x = x + self.position_embedding(*latents.shape[2:], x.shape[-1], x)
        x, order, padding = self.mask_tokens(x, mask, num_visible)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)]
        if self.class_embedding is not None:
            prefix.append(self.class_embedding(class_labels, x.shape[0], generator).to(x.dtype))
        x = torch.cat([*prefix, x], dim=1)
        attn_mask = None
        if padding is not None:
            padding = torch.cat([padding.new_ones(padding.shape[0], self.num_prefix_tokens), padding], dim=1)
            attn_mask = padding[:, None, None, :]
        if not self.config.encoder_cross_attention:
            context = context_mask = None
        x = self.norm(self._run_blocks(self.blocks, x, attn_mask, context, context_mask))
        return x, order, padding

    def forward_decoder(
        self,
        encoded: torch.Tensor,
        order: torch.Tensor,
        padding: torch.Tensor | None,
        height: int,
        width: int,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fill masked slots with the mask token, restore token order, recall positions by subtraction, run the
        blocks; returns the normalised decoder feature of every image token, ``B x L x decoder_hidden_size``."""
        x = self.decoder_embed(encoded)
        num_prefix = self.num_prefix_tokens
        prefix, visible = x[:, :num_prefix], x[:, num_prefix:]
        num_tokens = order.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(x.shape[0], num_tokens - visible.shape[1], -1)
        if padding is not None:  # padded slots of short rows are masked tokens too
            visible = torch.where(padding[:, num_prefix:, None], visible, self.mask_token.to(x.dtype))
        shuffled = torch.cat([visible, mask_tokens], dim=1)
        restore = order.argsort(dim=1)
        grid = torch.gather(shuffled, 1, restore[:, :, None].expand(-1, -1, x.shape[2]))
        grid = grid - self.position_embedding(height, width, x.shape[2], grid)  # spatial position recall
        x = self._run_blocks(self.decoder_blocks, torch.cat([prefix, grid], dim=1), None, context, context_mask)
        return self.decoder_norm(x)[:, num_prefix:]

    def forward_features(
        self,
        latents: torch.Tensor,
        mask: torch.Tensor,
        class_labels: torch.Tensor | Sequence[int] | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        num_visible: int | None = None,
    ) -> torch.Tensor:
        """Encoder and decoder without a head: the feature of every image token, ``B x L x decoder_hidden_size``.

        The diffusion head samples patches from these (``diffusion_head.sample_tokens``, used by the pipelines), the
        categorical head's :meth:`code_logits` read them. A categorical model quantises ``latents`` to its codebook.
        """
        if self.decoder_logits is not None:
            latents = quantise(latents, self.checked_codebook())
        class_labels, context_mask = self.prepare_conditions(
            latents.shape[0], class_labels, encoder_hidden_states, encoder_attention_mask
        )
        mask = mask.to(device=latents.device, dtype=torch.float32)
        encoded, order, padding = self.forward_encoder(
            latents, mask, num_visible, class_labels, encoder_hidden_states, context_mask, generator
        )
        h, w = latents.shape[2:]
        return self.forward_decoder(encoded, order, padding, h, w, encoder_hidden_states, context_mask)

    @staticmethod
    def forward_loss(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``L_LIR``: MSE per patch, averaged over masked patches only (0 when nothing is masked)."""
        per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp(min=1)

    def training_loss(
        self,
        latents: torch.Tensor,
        features: torch.Tensor,
        pred: torch.Tensor | None,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The loss :meth:`forward` returns: ``L_LIR`` on the MSE head's ``pred``, or the diffusion head's loss or the
        categorical head's cross-entropy on the decoder ``features`` (plus ``mse_loss_weight`` x ``L_LIR`` when the
        model has both heads; with the categorical head, against the quantised latents)."""
        target = patchify(latents, self.patch_size)
        if self.decoder_logits is not None:
            codes = code_targets(latents, self.checked_codebook(), self.patch_size)
            head = categorical_loss(self.code_logits(features), codes, mask)
            target = self.codebook[codes].flatten(2)  # the quantised latent, patchified
        elif self.diffusion_head is not None:
            head = self.diffusion_head.loss(
                target.flatten(0, 1), features.flatten(0, 1), mask.flatten(), generator, self.config.diffusion_batch_mul
            )
        else:
            return self.forward_loss(target, pred, mask)
        return head if pred is None else head + self.config.mse_loss_weight * self.forward_loss(target, pred, mask)

    def forward(
        self,
        latents: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        class_labels: torch.Tensor | Sequence[int] | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        return_loss: bool = True,
    ) -> LMDModelOutput | tuple:
        """Predict the latent from its visible patches, and the training loss on the masked ones.

        Args:
            latents: normalised projector latents, ``B x C x H x W``.
            mask: ``B x L`` token mask (1 = masked); rows may mask different numbers of tokens, all of them too.
            mask_ratio: draw a uniform random mask of this ratio in ``[0, 1]`` instead (default 0.75 when neither
                is given); 1 masks every token, as at the start of generation.
            generator: makes the random mask, label dropout and the diffusion loss's noise reproducible.
            class_labels: ``B`` labels in ``[0, num_class_embeds]`` of a class-conditional model
                (``num_class_embeds`` = the null class); ``None`` gives every image the null class.
            encoder_hidden_states: ``B x S x cross_attention_dim`` text embeddings of a text-conditional model.
            encoder_attention_mask: ``B x S``, 1 = attend to that text token (hides padding).
            return_dict: return an :class:`LMDModelOutput` rather than a tuple ``(sample, mask, loss)``.
            return_loss: compute the training loss (the default, the trainer's call); inference passes ``False``, as
                the pipelines do, and gets ``loss=None`` without the loss's work (the diffusion head's noised copies).
        """
        self.check_inputs(latents, mask, mask_ratio)
        b, _, h, w = latents.shape
        num_visible = None
        if mask is None:
            ratio = 0.75 if mask_ratio is None else mask_ratio
            num_tokens = self.num_tokens(h, w)
            num_visible = num_tokens - num_masked_tokens(num_tokens, ratio)
            mask = random_mask(b, num_tokens, ratio, generator=generator, device=latents.device)
        mask = mask.to(device=latents.device, dtype=torch.float32)
        features = self.forward_features(
            latents, mask, class_labels, encoder_hidden_states, encoder_attention_mask, generator, num_visible
        )
        pred = sample = loss = None
        if self.decoder_pred is not None:
            pred = self.decoder_pred(features)
            sample = unpatchify(pred.to(latents.dtype), self.patch_size, h, w)
        elif self.decoder_logits is not None:  # the most likely image
            codes = self.code_logits(features).argmax(dim=-1)
            sample = codes_to_latents(codes, self.codebook, self.patch_size, h, w).to(latents.dtype)
        if return_loss:
            loss = self.training_loss(latents, features, pred, mask, generator)
        if not return_dict:
            return sample, mask, loss
        return LMDModelOutput(sample=sample, mask=mask, loss=loss)
