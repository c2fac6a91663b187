"""What projector pre-training trains (method.md §2, paper §3.1, eqs. 4-6): the autoencoder, its loss-returning
wrapper, the patch discriminator and the losses.

``L = L_rec + L_reg + gamma * L_GAN`` for the autoencoder, where ``L_reg`` is the VQ codebook + commitment term (or
a KL term for ``AutoencoderKL``), and ``gamma`` balances the adversarial gradient against the reconstruction
gradient at the decoder's last layer. The discriminator (a PatchGAN that scores overlapping image patches as real
or reconstructed, so the adversarial loss sharpens local texture) minimises its own loss separately.

The wrapper exists because Accelerate (and DDP) must see one ``forward`` that returns everything the loss
needs; ``VQModel.forward`` already returns the reconstruction and its codebook + commitment loss, and
``AutoencoderKL.forward`` drops the posterior, so for KL the wrapper encodes and decodes itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..args.projector import DISC_LOSSES


def build_projector(
    *,
    projector_type: str,
    block_out_channels: Sequence[int],
    layers_per_block: int,
    latent_channels: int,
    num_vq_embeddings: int,
    vq_embed_dim: int | None,
    norm_num_groups: int,
    mid_block_attention: bool,
    resolution: int,
) -> VQModel | AutoencoderKL:
    """A fresh ``VQModel`` (``projector_type="vq"``) or ``AutoencoderKL`` (``"kl"``) for ``resolution``-pixel RGB
    images: one encoder and one decoder block per width of ``block_out_channels``, so it downsamples by
    ``2 ** (len(block_out_channels) - 1)`` (``args.projector.projector_kwargs`` converts the flags)."""
    n = len(block_out_channels)
    common = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=resolution,
        mid_block_add_attention=mid_block_attention,
    )
    if projector_type == "vq":
        return VQModel(num_vq_embeddings=num_vq_embeddings, vq_embed_dim=vq_embed_dim, **common)
    return AutoencoderKL(**common)


def build_discriminator(base_channels: int, num_layers: int) -> PatchDiscriminator:
    """The patch discriminator of this width and depth; its GroupNorm groups adapt to the width."""
    groups = next(g for g in (8, 4, 2, 1) if base_channels % g == 0)
    return PatchDiscriminator(base_channels=base_channels, num_layers=num_layers, norm_num_groups=groups)


@torch.no_grad()
def init_codebook_from_data(vq: VQModel, images: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Set the codebook to randomly chosen encoder outputs of ``images`` (a data-dependent initialisation).

    diffusers initialises codes within ``+-1/num_vq_embeddings`` of zero, far from the encoder's outputs, so
    the first batches pick a handful of codes and the rest never train (codebook collapse: on the demo data,
    under 1% of a 1024-code book in use, against over 80% with this initialisation).
    """
    if not isinstance(vq, VQModel):
        raise TypeError(f"init_codebook_from_data needs a VQModel, got {type(vq).__name__}.")
    latents = vq.encode(images.to(device=vq.device, dtype=vq.dtype)).latents
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    codebook = vq.quantize.embedding.weight
    num_codes = codebook.shape[0]
    if len(vectors) >= num_codes:
        chosen = vectors[torch.randperm(len(vectors), generator=generator)[:num_codes]]
    else:  # fewer vectors than codes: repeat them, jittered so that no two codes coincide
        picks = torch.randint(len(vectors), (num_codes,), generator=generator)
        noise = torch.randn(num_codes, vectors.shape[1], generator=generator).to(vectors) * 0.01 * vectors.std()
        chosen = vectors[picks] + noise
    codebook.copy_(chosen)


class AutoencoderWithLoss(nn.Module):
    """``forward(images) -> (reconstruction, regulariser)`` for a ``VQModel`` or ``AutoencoderKL``.

    For a ``VQModel`` the regulariser is diffusers' own ``commit_loss`` with the quantiser switched to
    ``legacy=False``: diffusers' legacy default puts ``beta`` on the codebook term, whereas the paper's eq. 4
    (method.md §2) is ``||sg[E(x)] - z_q||^2 + beta ||sg[z_q] - E(x)||^2``. Inference is unaffected by the switch.
    """

    def __init__(self, vae: VQModel | AutoencoderKL, commitment_beta: float = 0.25, kl_weight: float = 1e-6):
        super().__init__()
        if not isinstance(vae, (VQModel, AutoencoderKL)):
            raise TypeError(f"Can train a diffusers VQModel or AutoencoderKL, got {type(vae).__name__}.")
        self.vae = vae
        self.kl_weight = kl_weight
        if isinstance(vae, VQModel):
            vae.quantize.legacy = False
            vae.quantize.beta = commitment_beta

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, where the adaptive adversarial weight is measured."""
        return self.vae.decoder.conv_out.weight

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.vae, VQModel):
            out = self.vae(images)
            return out.sample, out.commit_loss.mean()
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        return reconstruction, self.kl_weight * kl_loss(posterior, images[0].numel())


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """Strided 4x4 convolutions down to a grid of real/fake logits, one per receptive-field patch.

    Args:
        in_channels: image channels.
        base_channels: width of the first layer; each stride-2 layer doubles it, up to 8x.
        num_layers: stride-2 layers; each halves the side and widens the receptive field (3 gives 70x70 patches).
        norm_num_groups: groups of the GroupNorm after every inner convolution (GroupNorm rather than BatchNorm,
            so the statistics need no syncing across processes).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm_num_groups: int = 8):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        widths = [base_channels * min(2**i, 8) for i in range(num_layers + 1)]
        bad = [w for w in widths[1:] if w % norm_num_groups]
        if bad:
            raise ValueError(f"Discriminator widths {bad} are not divisible by norm_num_groups={norm_num_groups}.")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, num_layers + 1):
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(norm_num_groups, widths[i]),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.apply(_init_weights)

    def min_input_size(self) -> int:
        """The smallest image side that still yields at least one logit."""
        return 3 * 2**self.config.num_layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``B x C x H x W`` in ``[-1, 1]`` -> patch logits ``B x 1 x h x w`` (positive = real)."""
        if min(images.shape[-2:]) < self.min_input_size():
            raise ValueError(
                f"Images of side {min(images.shape[-2:])} are too small for a {self.config.num_layers}-layer patch "
                f"discriminator (at least {self.min_input_size()}): lower --disc_layers."
            )
        return self.layers(images)


def _init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: convolutions ~ N(0, 0.02), norms at identity."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GroupNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------------- losses
MAX_ADAPTIVE_WEIGHT = 1e4


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The discriminator's loss: hinge, or ``vanilla`` = ``-[log D(x) + log(1 - D(x_hat))]`` (L_ADV of method.md §2)."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())
    if kind == "vanilla":  # softplus(-l) = -log sigmoid(l), softplus(l) = -log(1 - sigmoid(l))
        return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
    raise ValueError(f"Unknown discriminator loss {kind!r}; choose one of {DISC_LOSSES}.")


def generator_loss(fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The autoencoder's adversarial loss on its reconstructions' logits (non-saturating for ``vanilla``)."""
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "vanilla":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"Unknown discriminator loss {kind!r}; choose one of {DISC_LOSSES}.")


def adaptive_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = MAX_ADAPTIVE_WEIGHT,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``gamma = ||grad_G_last L_rec|| / (||grad_G_last L_GAN|| + eps)``, clamped to ``[0, max_weight]``, detached.

    ``last_layer`` is the decoder's last weight; the graph is kept so the caller can still backpropagate.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (gan_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``||x - x_hat||^2``, averaged over pixels (in float32, whatever the autocast dtype)."""
    return F.mse_loss(reconstruction.float(), images.float())


def kl_loss(posterior, num_pixels: int) -> torch.Tensor:
    """KL to a unit Gaussian per image, divided by its pixel count to match the per-pixel reconstruction loss,
    so ``kl_weight`` keeps Stable Diffusion's meaning (1e-6 relative to the per-image squared error sum)."""
    return posterior.kl().mean() / num_pixels
