"""LMDMaskScheduler: the training ratio curves of method.md §3 and progressive unmasking (method.md §4)."""

import pytest
import torch

from diffusers_lmd import LMDMaskScheduler
from diffusers_lmd.masking import random_mask, token_mask_to_latent_mask
from diffusers_lmd.schedulers.scheduling_lmd_mask import RISING_SCHEDULES

# method.md §3, S = 600, r_min = 0.15, r_max = 0.75.
COSINE_REFERENCE = {
    0: 0.15,
    1: 0.150067,
    50: 0.175317,
    100: 0.241793,
    200: 0.453694,
    300: 0.663437,
    399: 0.749991,
    400: 0.75,
    599: 0.75,
}
PIECEWISE_REFERENCE = {50: 0.275, 100: 0.4, 200: 0.4, 300: 0.575, 399: 0.74825, 400: 0.75}


@pytest.mark.parametrize(
    "schedule,reference", [("cosine", COSINE_REFERENCE), ("piecewise", PIECEWISE_REFERENCE)], ids=["cosine", "piece"]
)
def test_spec_reference_values(schedule, reference):
    scheduler = LMDMaskScheduler(schedule=schedule, num_train_steps=600)
    for step, expected in reference.items():
        assert scheduler.get_mask_ratio(step) == pytest.approx(expected, abs=1e-6), step
        # total_steps given explicitly overrides the config
        assert LMDMaskScheduler(schedule=schedule).get_mask_ratio(step, 600) == pytest.approx(expected, abs=1e-6)


def test_uniform_and_constant_values():
    uniform = LMDMaskScheduler(schedule="uniform", num_train_steps=600)
    assert uniform.get_mask_ratio(300) == pytest.approx(0.45)
    constant = LMDMaskScheduler(schedule="constant", num_train_steps=600)
    assert {constant.get_mask_ratio(s) for s in (0, 1, 300, 600)} == {0.75}


@pytest.mark.parametrize("schedule", RISING_SCHEDULES)
@pytest.mark.parametrize("total", [2, 5, 600, 1001])
def test_schedules_are_monotone_with_right_endpoints(schedule, total):
    scheduler = LMDMaskScheduler(schedule=schedule, mask_ratio_min=0.1, mask_ratio_max=0.8, num_train_steps=total)
    ratios = [scheduler.get_mask_ratio(s) for s in range(total + 3)]  # past the end stays at the maximum
    assert all(b >= a for a, b in zip(ratios, ratios[1:])), schedule
    assert ratios[0] == pytest.approx(0.8 if schedule == "constant" else 0.1)
    assert ratios[-1] == pytest.approx(0.8)
    assert scheduler.get_mask_ratio(total) == pytest.approx(0.8)
    assert all(0.1 <= r <= 0.8 for r in ratios)


def test_ratio_is_a_pure_function_of_the_step():
    """A resumed run (a fresh scheduler) continues the same curve."""
    a = LMDMaskScheduler(num_train_steps=1000)
    ratios = [a.get_mask_ratio(s) for s in range(0, 1000, 37)]
    b = LMDMaskScheduler(num_train_steps=1000)
    assert [b.get_mask_ratio(s) for s in range(0, 1000, 37)] == ratios


def test_save_and_load_round_trip(tmp_path):
    scheduler = LMDMaskScheduler(schedule="piecewise", mask_ratio_min=0.2, mask_ratio_max=0.7, num_train_steps=321)
    scheduler.save_pretrained(tmp_path)
    loaded = LMDMaskScheduler.from_pretrained(tmp_path)
    assert dict(loaded.config) == dict(scheduler.config)
    assert [loaded.get_mask_ratio(s) for s in range(0, 400, 13)] == [
        scheduler.get_mask_ratio(s) for s in range(0, 400, 13)
    ]
    assert LMDMaskScheduler.from_config(scheduler.config).config.schedule == "piecewise"


def test_truncnorm_draws_mars_ratios_as_a_pure_function_of_seed_and_step():
    scheduler = LMDMaskScheduler("truncnorm", mask_ratio_min=0.7, mask_ratio_max=1.0, num_train_steps=100)
    ratios = [scheduler.get_mask_ratio(step, seed=3) for step in range(2000)]
    assert all(0.7 <= r <= 1.0 for r in ratios)
    # MAR's truncated normal (mean 1, std 0.25, on [0.7, 1]) has mean 0.868: most steps mask nearly everything.
    assert sum(ratios) / len(ratios) == pytest.approx(0.868, abs=0.01)
    again = LMDMaskScheduler("truncnorm", mask_ratio_min=0.7, mask_ratio_max=1.0, num_train_steps=100)
    assert [again.get_mask_ratio(step, seed=3) for step in (5, 1999, 0)] == [ratios[5], ratios[1999], ratios[0]]
    assert scheduler.get_mask_ratio(5, seed=4) != ratios[5]


def test_a_schedule_may_reach_ratio_one_for_generative_training():
    scheduler = LMDMaskScheduler("cosine", mask_ratio_min=0.15, mask_ratio_max=1.0, num_train_steps=600)
    assert scheduler.get_mask_ratio(0) == pytest.approx(0.15) and scheduler.get_mask_ratio(400) == 1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(schedule="linear"), "schedule must be one of"),
        (dict(mask_ratio_min=0.8, mask_ratio_max=0.5), "mask_ratio_min <= mask_ratio_max"),
        (dict(mask_ratio_max=1.1), "mask_ratio_max <= 1"),
        (dict(num_train_steps=0), "num_train_steps"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LMDMaskScheduler(**kwargs)


def test_bad_steps_raise():
    scheduler = LMDMaskScheduler()
    with pytest.raises(ValueError, match="step must be non-negative"):
        scheduler.get_mask_ratio(-1)
    with pytest.raises(ValueError, match="total_steps"):
        scheduler.get_mask_ratio(3, 0)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 4, 4, 4), 0, torch.zeros(1, 4, 4, 4), mask=torch.ones(1, 4))


def _unmask(num_steps, mask, seed=0, height=8, width=12, patch=2):
    """Run progressive unmasking with a stand-in model that predicts ``step index + 1`` everywhere."""
    scheduler = LMDMaskScheduler()
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.zeros(mask.shape[0], 4, height, width)
    history = [(sample, mask)]
    for i, t in enumerate(scheduler.timesteps):
        prediction = torch.full_like(sample, float(i + 1))
        out = scheduler.step(prediction, t, sample, mask=mask, generator=generator)
        sample, mask = out.prev_sample, out.mask
        history.append((sample, mask))
    return scheduler, history


@pytest.mark.parametrize("num_steps", [1, 2, 5, 12])
def test_progressive_unmasking_reveals_all_monotonically_and_keeps_visible_tokens(num_steps):
    start = torch.ones(2, 24)
    start[1] = random_mask(1, 24, 0.5, generator=torch.Generator().manual_seed(1))[0]  # a partly given sample
    scheduler, history = _unmask(num_steps, start)
    assert scheduler.timesteps.tolist() == list(range(num_steps - 1, -1, -1))
    counts = [mask.sum(dim=1) for _, mask in history]
    assert torch.all(history[-1][1] == 0), "the last step reveals every token"
    for (sample, mask), (new_sample, new_mask) in zip(history, history[1:]):
        assert torch.all(new_mask <= mask), "a revealed token is never masked again"
        visible = token_mask_to_latent_mask(1 - mask, 2, 8, 12).expand_as(sample) > 0
        assert torch.equal(new_sample[visible], sample[visible]), "a visible token never changes"
    assert all(torch.all(b <= a) for a, b in zip(counts, counts[1:]))
    if num_steps > 1:
        assert 0 < history[1][1][0].sum() < 24, "an intermediate step reveals some but not all"


def test_progressive_unmasking_is_seeded():
    start = torch.ones(3, 24)
    _, a = _unmask(4, start, seed=7)
    _, b = _unmask(4, start, seed=7)
    _, c = _unmask(4, start, seed=8)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))


def test_one_generator_per_row_reveals_what_single_rows_reveal():
    scheduler = LMDMaskScheduler()
    scheduler.set_timesteps(4)
    sample, prediction, mask = torch.zeros(3, 4, 8, 12), torch.ones(3, 4, 8, 12), torch.ones(3, 24)
    seeds = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    batch = scheduler.step(prediction, 2, sample, mask=mask, generator=seeds)
    for i in range(3):
        one, seed = slice(i, i + 1), torch.Generator().manual_seed(i)
        row = scheduler.step(prediction[one], 2, sample[one], mask=mask[one], generator=seed)
        assert torch.equal(batch.mask[one], row.mask) and torch.equal(batch.prev_sample[one], row.prev_sample)
    with pytest.raises(ValueError, match="one per mask"):
        scheduler.reveal(2, mask, seeds[:2])


def test_step_rejects_mismatched_shapes():
    scheduler = LMDMaskScheduler()
    scheduler.set_timesteps(2)
    sample = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="differ"):
        scheduler.step(torch.zeros(1, 4, 8, 4), 1, sample, mask=torch.ones(1, 16))
    with pytest.raises(ValueError, match="does not tile"):
        scheduler.step(sample, 1, sample, mask=torch.ones(1, 15))
    with pytest.raises(ValueError, match="outside"):
        scheduler.step(sample, 2, sample, mask=torch.ones(1, 16))


def test_step_takes_the_mask_as_a_keyword_and_the_old_positional_call_still_works():
    scheduler = LMDMaskScheduler()
    scheduler.set_timesteps(3)
    sample, prediction, mask = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8), torch.ones(2, 16)
    keyword = scheduler.step(prediction, 2, sample, mask=mask, generator=torch.Generator().manual_seed(0))
    with pytest.warns(FutureWarning, match="mask=mask"):
        positional = scheduler.step(prediction, 2, sample, mask, torch.Generator().manual_seed(0), False)
    assert torch.equal(positional[0], keyword.prev_sample) and torch.equal(positional[1], keyword.mask)
    with pytest.raises(ValueError, match="needs the current token mask"):
        scheduler.step(prediction, 2, sample)
    with pytest.raises(TypeError, match="both positionally and as a keyword"):
        scheduler.step(prediction, 2, sample, mask, mask=mask)
