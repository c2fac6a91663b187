"""The patch discriminator of projector pre-training (SPEC §2, paper §3.1): a PatchGAN that scores overlapping
image patches as real or reconstructed, so the adversarial loss sharpens local texture."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


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
