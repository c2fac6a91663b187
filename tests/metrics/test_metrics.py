"""method.md §5 metrics on synthetic curves whose answers are worked out by hand in the comments."""

import math

import pytest
import torch

from diffusers_lmd.metrics import efficiency
from diffusers_lmd.training import parse_lmd_args, read_jsonl, read_training_state, train_lmd


def test_ema_starts_at_first_value():
    # s0 = 1; s1 = 0.5*1 + 0.5*3 = 2; s2 = 0.5*2 + 0.5*0 = 1
    assert efficiency.ema_smooth([1.0, 3.0, 0.0], ema_decay=0.5) == [1.0, 2.0, 1.0]


def test_loss_decrease_events_without_smoothing():
    # delta 10%: reference 1.0 -> 0.95 is only 5% lower (no event), 0.9 is exactly 10% (event, ref 0.9),
    # 0.85 is 5.6% below 0.9 (no), 0.81 is exactly 10% below 0.9 (event), the rise to 2.0 is never an event.
    losses = [1.0, 0.95, 0.9, 0.85, 2.0, 0.81]
    assert efficiency.loss_decrease_events(losses, delta=0.1, ema_decay=0.0) == [0, 2, 5]
    # MLI = mean of the gaps (2, 3) = 2.5
    assert efficiency.mean_loss_decrease_iterations(losses, delta=0.1, ema_decay=0.0) == pytest.approx(2.5)


def test_loss_decrease_events_with_ema():
    # EMA 0.5 of [8, 0, 0, 0, 0]: 8, 4, 2, 1, 0.5 -> every step halves: events at 1, 2, 3, 4, MLI 1.
    assert efficiency.loss_decrease_events([8, 0, 0, 0, 0], delta=0.01, ema_decay=0.5) == [0, 1, 2, 3, 4]
    # A spike is damped: raw [4, 4, 0, 4, 4] -> EMA 0.5: 4, 4, 2, 3, 3.5 -> one event at step 2.
    assert efficiency.loss_decrease_events([4, 4, 0, 4, 4], delta=0.01, ema_decay=0.5) == [0, 2]


def test_default_delta_is_one_percent():
    # 1.0 -> 0.991 is 0.9% lower (no), 0.99 is 1% lower (event).
    assert efficiency.loss_decrease_events([1.0, 0.991, 0.99], ema_decay=0.0) == [0, 2]


def test_flat_loss_has_infinite_mli():
    assert efficiency.mean_loss_decrease_iterations([1.0] * 10) == math.inf
    assert efficiency.loss_decrease_events([]) == []


def test_mit_drops_warmup_and_mlt_is_the_product():
    # warm-up of 2: mean of [1, 2, 3] = 2
    mit = efficiency.mean_iteration_time([10.0, 5.0, 1.0, 2.0, 3.0], warmup_steps=2)
    assert mit == pytest.approx(2.0)
    # The paper's own rows satisfy MLT = MIT x MLI: MAE 2.62 x 6.53 = 17.11, LMD-CS 2.61 x 2.65 = 6.92.
    assert round(efficiency.mean_loss_decrease_time(2.62, 6.53), 2) == 17.11
    assert round(efficiency.mean_loss_decrease_time(2.61, 2.65), 2) == 6.92


def test_mit_rejects_too_short_or_bad_input():
    with pytest.raises(ValueError, match="warmup_steps"):
        efficiency.mean_iteration_time([1.0, 1.0], warmup_steps=2)
    with pytest.raises(ValueError, match="durations"):
        efficiency.mean_iteration_time([1.0, -1.0], warmup_steps=0)
    with pytest.raises(ValueError, match="finite"):
        efficiency.loss_decrease_events([1.0, float("nan")])
    with pytest.raises(ValueError, match="delta"):
        efficiency.loss_decrease_events([1.0], delta=1.5)


def test_mat_mean_time_between_accuracy_improvements():
    times = [0.0, 1.0, 2.0, 4.0, 7.0]
    acc = [0.10, 0.20, 0.20, 0.15, 0.30]
    # improvements at indices 1 and 4 (0.20 ties, 0.15 drops): events at t = 0, 1, 7 -> gaps 1, 6 -> MAT 3.5
    assert efficiency.accuracy_increase_events(acc) == [0, 1, 4]
    assert efficiency.mean_accuracy_increase_time(times, acc) == pytest.approx(3.5)
    # min_delta 0.15: 0.20 is not above 0.10 + 0.15, 0.30 is -> events at t = 0, 7 -> MAT 7
    assert efficiency.mean_accuracy_increase_time(times, acc, min_delta=0.15) == pytest.approx(7.0)
    assert efficiency.mean_accuracy_increase_time([0.0, 1.0], [0.5, 0.5]) == math.inf
    with pytest.raises(ValueError, match="same length"):
        efficiency.mean_accuracy_increase_time([0.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-decreasing"):
        efficiency.mean_accuracy_increase_time([1.0, 0.0], [0.1, 0.2])


def test_overall_mean_reproduces_paper_table_5():
    # LMD row: MIT 2.61, MLT 6.92, MLI 2.65, MAT@1 0.135, MAT@5 0.102 -> overall 2.48
    assert round(efficiency.overall_mean(2.61, 6.92, 2.65, 0.135, 0.102), 2) == 2.48
    # w/o MDS: 2.62, 11.40, 4.35, 0.225, 0.143 -> 3.75
    assert round(efficiency.overall_mean(2.62, 11.40, 4.35, 0.225, 0.143), 2) == 3.75


def test_psnr_per_image():
    target = torch.zeros(2, 3, 4, 4)
    prediction = target.clone()
    prediction[0] += 0.2  # MSE 0.04 -> 10 log10(4 / 0.04) = 20 dB
    prediction[1, :, :2] += 2.0  # half the pixels off by 2: MSE 2 -> 10 log10(2) = 3.0103 dB
    values = efficiency.psnr(prediction, target, data_range=2.0)
    assert values.tolist() == pytest.approx([20.0, 10 * math.log10(2.0)])
    assert math.isinf(efficiency.psnr(target, target)[0].item())
    with pytest.raises(ValueError, match="shape"):
        efficiency.psnr(target, target[:1])


def test_tracker_matches_batch_functions_and_resumes():
    losses = [1.0, 0.8, 0.85, 0.6, 0.61, 0.5, 0.5, 0.3]
    times = [9.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0]
    tracker = efficiency.EfficiencyTracker(ema_decay=0.5, delta=0.05, warmup_steps=3)
    flags = [tracker.update(loss, t) for loss, t in zip(losses, times)]
    events = efficiency.loss_decrease_events(losses, delta=0.05, ema_decay=0.5)
    assert [i for i, f in enumerate(flags) if f] == events[1:]
    assert tracker.mli == pytest.approx(efficiency.mean_loss_decrease_iterations(losses, delta=0.05, ema_decay=0.5))
    assert tracker.mit == pytest.approx(efficiency.mean_iteration_time(times, warmup_steps=3))  # (2+2+3+3+4)/5 = 2.8
    assert tracker.mit == pytest.approx(2.8)
    assert tracker.summary()["mlt_s"] == pytest.approx(tracker.mit * tracker.mli)

    # Resume half-way from a saved state: same final numbers.
    first = efficiency.EfficiencyTracker(ema_decay=0.5, delta=0.05, warmup_steps=3)
    for loss, t in zip(losses[:4], times[:4]):
        first.update(loss, t)
    resumed = efficiency.EfficiencyTracker(ema_decay=0.5, delta=0.05, warmup_steps=3)
    resumed.load_state_dict(first.state_dict())
    for loss, t in zip(losses[4:], times[4:]):
        resumed.update(loss, t)
    assert resumed.summary() == tracker.summary()


def test_tracker_summary_omits_undefined_metrics_and_stops_on_nan():
    tracker = efficiency.EfficiencyTracker(warmup_steps=0)
    tracker.update(1.0)  # first call without step_time: no duration yet
    assert tracker.summary() == {"loss_events": 0.0}
    tracker.update(1.0)  # timed from the previous call
    assert tracker.mit is not None and tracker.mit >= 0
    assert "mli" not in tracker.summary()
    with pytest.raises(ValueError, match="non-finite"):
        tracker.update(float("nan"))
    with pytest.raises(ValueError, match="Unknown"):
        tracker.load_state_dict({"bogus": 1})


def test_restart_clock_excludes_non_training_time(monkeypatch):
    clock = iter([0.0, 1.0, 11.0, 12.5])  # perf_counter at: restart, update, restart (after 10 s of eval), update
    monkeypatch.setattr("diffusers_lmd.metrics.efficiency.time.perf_counter", lambda: next(clock))
    tracker = efficiency.EfficiencyTracker(warmup_steps=0)
    tracker.restart_clock()
    tracker.update(1.0)  # 1.0 s step
    tracker.restart_clock()
    tracker.update(0.5)  # 1.5 s step; the 10 s in between are not counted
    assert tracker.mit == pytest.approx(1.25)


def _train_tiny_lmd(projector, tmp_path, *extra):
    argv = ["--projector_path", projector, "--output_dir", str(tmp_path / "run"), "--resolution", "16"]
    argv += ["--latent_cache_dir", str(tmp_path / "cache"), "--preset", "tiny", "--train_batch_size", "8"]
    argv += ["--learning_rate", "1e-3", "--demo_crops_per_photo", "8", "--demo_eval_crops", "3"]
    argv += ["--report_to", "none", "--validation_steps", "1000", "--max_train_steps", "12"]
    argv += ["--checkpointing_steps", "6", *extra]
    train_lmd(parse_lmd_args(argv))
    return [r for r in read_jsonl(str(tmp_path / "run" / "train_log.jsonl")) if "loss" in r]


def test_train_lmd_logs_mit_mli_mlt_and_resumes_them(tiny_projector_path, tmp_path, one_thread):
    records = _train_tiny_lmd(tiny_projector_path, tmp_path)
    last, losses = records[-1], [r["loss"] for r in records]
    assert last["mit_s"] > 0
    assert last["loss_events"] == len(efficiency.loss_decrease_events(losses)) - 1 > 0  # the tiny run's loss falls
    assert last["mli"] == pytest.approx(efficiency.mean_loss_decrease_iterations(losses))
    assert last["mlt_s"] == pytest.approx(last["mit_s"] * last["mli"])
    assert read_training_state(str(tmp_path / "run" / "checkpoint-6"))["efficiency"]["steps"] == 6

    resumed = _train_tiny_lmd(tiny_projector_path, tmp_path, "--resume_from_checkpoint", "checkpoint-6")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert resumed[-1]["loss_events"] == last["loss_events"]  # the event count continued, not restarted
    assert resumed[-1]["mli"] == pytest.approx(last["mli"], rel=1e-3)
