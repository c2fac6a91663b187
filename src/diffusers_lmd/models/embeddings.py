"""Fixed 2-D sine-cosine spatial position embedding (SPE), as in MAE."""

from __future__ import annotations

import torch


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``N`` positions -> ``N x dim`` with frequencies ``1 / 10000^(2k / dim)``."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d_position_embedding(dim: int, grid_height: int, grid_width: int) -> torch.Tensor:
    """``(grid_height * grid_width) x dim`` embedding in row-major token order.

    The first half of the channels encodes the row index and the second half the column (method.md §2).
    """
    if dim % 4:
        raise ValueError(f"The position embedding needs a width divisible by 4, got {dim}.")
    rows = torch.arange(grid_height).repeat_interleave(grid_width)
    cols = torch.arange(grid_width).repeat(grid_height)
    emb = torch.cat([_sincos_1d(dim // 2, rows), _sincos_1d(dim // 2, cols)], dim=1)
    return emb.float()
