"""Patch and mask helpers: token order, exact masked counts, mask conversions."""

import pytest
import torch

from diffusers_lmd.masking import (
    check_mask_ratio,
    check_patchable,
    keep_visible,
    num_masked_tokens,
    patchify,
    pixel_mask_to_token_mask,
    random_mask,
    token_mask_to_latent_mask,
    unpatchify,
)


@pytest.mark.parametrize("patch_size,height,width", [(1, 4, 6), (2, 8, 8), (2, 6, 10), (4, 8, 16)])
def test_patchify_round_trip_and_row_major_order(patch_size, height, width):
    latents = torch.randn(2, 3, height, width)
    tokens = patchify(latents, patch_size)
    grid_w = width // patch_size
    assert tokens.shape == (2, (height // patch_size) * grid_w, patch_size * patch_size * 3)
    # token i covers patch row i // grid_w and column i % grid_w, its values laid out (row, column, channel)
    for i in range(tokens.shape[1]):
        r, c = divmod(i, grid_w)
        patch = latents[:, :, r * patch_size : (r + 1) * patch_size, c * patch_size : (c + 1) * patch_size]
        assert torch.equal(tokens[:, i], patch.permute(0, 2, 3, 1).flatten(1))
    assert torch.equal(unpatchify(tokens, patch_size, height, width), latents)


@pytest.mark.parametrize("num_tokens", [1, 7, 16, 196])
@pytest.mark.parametrize("ratio", [0.0, 0.15, 0.45, 0.5, 0.75, 0.99])
def test_random_mask_masks_exactly_l_minus_int_l_times_keep(num_tokens, ratio):
    expected = num_tokens - int(num_tokens * (1 - ratio))
    assert num_masked_tokens(num_tokens, ratio) == expected
    mask = random_mask(5, num_tokens, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, num_tokens)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.sum(dim=1).tolist() == [float(expected)] * 5


def test_random_mask_is_seeded_and_varies_across_rows():
    a = random_mask(4, 64, 0.5, generator=torch.Generator().manual_seed(3))
    b = random_mask(4, 64, 0.5, generator=torch.Generator().manual_seed(3))
    c = random_mask(4, 64, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) == 4


def test_token_mask_to_latent_mask_spreads_each_token_over_its_patch():
    mask = torch.zeros(1, 6)  # 2 x 3 patches of 2 x 2 over a 4 x 6 latent
    mask[0, 4] = 1  # row 1, column 1
    grid = token_mask_to_latent_mask(mask, 2, 4, 6)
    assert grid.shape == (1, 1, 4, 6)
    assert grid.sum() == 4
    assert torch.all(grid[0, 0, 2:4, 2:4] == 1)


def test_pixel_mask_to_token_mask_masks_a_patch_if_any_pixel_is_masked():
    pixel_mask = torch.zeros(1, 1, 16, 32)  # 8-pixel patches: 2 x 4 tokens
    pixel_mask[0, 0, 9, 17] = 1.0  # one pixel in token row 1, column 2
    tokens = pixel_mask_to_token_mask(pixel_mask, 8)
    assert tokens.shape == (1, 8)
    assert tokens[0].nonzero().flatten().tolist() == [6]


def test_keep_visible_pastes_predictions_into_masked_tokens_only():
    latents, prediction = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1]])  # 2 x 2 tokens of 2 x 2
    out = keep_visible(latents, prediction, mask, 2)
    assert out[0, :, :2, :2].eq(1).all() and out[0].sum() == 3 * 4
    assert out[1, :, 2:, 2:].eq(1).all() and out[1].sum() == 3 * 4


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_check_mask_ratio_rejects_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        check_mask_ratio(ratio)


def test_check_mask_ratio_allows_one_when_asked():
    check_mask_ratio(1.0, allow_one=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_mask_ratio(1.01, allow_one=True)


def test_check_patchable_names_the_sizes():
    check_patchable(8, 12, 4)
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        check_patchable(8, 10, 4)
