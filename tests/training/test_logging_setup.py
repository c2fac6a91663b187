"""Console and tracker output of the training scripts (issue 14 items 1 and 9): rank-aware logging set up as in
diffusers' example scripts, lines that really reach the console, and images through Accelerate's trackers."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import diffusers
import numpy as np
import pytest
import transformers
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from testing_utils import TINY_PROJECTOR_FLAGS, run_and_resume

from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.training.logging import log_images, setup_logging

ROOT = Path(__file__).resolve().parents[2]
GRID = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


class OtherRank:
    """What ``setup_logging`` reads from the ``Accelerator`` of a process that is not the local main one."""

    is_local_main_process = False
    state = "Distributed environment: MULTI_GPU  Process index: 1"


def test_main_process_logs_info_and_libraries_as_diffusers_examples_set_them(
    restore_verbosity, fresh_accelerate_state, caplog
):
    setup_logging(Accelerator(cpu=True))
    assert logging.getLogger("diffusers_lmd.training.checkpointing").getEffectiveLevel() == logging.INFO
    assert diffusers.utils.logging.get_verbosity() == logging.INFO
    assert transformers.utils.logging.get_verbosity() == logging.WARNING
    assert datasets.utils.logging.get_verbosity() == logging.WARNING
    assert "Distributed environment" in caplog.text  # the Accelerate state, as diffusers' scripts log it


def test_other_processes_only_report_errors(restore_verbosity, caplog):
    setup_logging(OtherRank())
    assert logging.getLogger("diffusers_lmd.training").getEffectiveLevel() == logging.ERROR
    for library in (diffusers, transformers, datasets):
        assert library.utils.logging.get_verbosity() == logging.ERROR
    assert "MULTI_GPU" not in caplog.text


class ListTracker(GeneralTracker):
    """A user tracker with ``log_images``, keeping what it receives."""

    name = "list_tracker"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.images = []

    @property
    def tracker(self):
        return self

    def log(self, values, step=None, **kwargs):
        pass

    def log_images(self, values, step=None, **kwargs):
        self.images.append((values, step))


class ScalarsOnlyTracker(ListTracker):
    name = "scalars_only"
    log_images = None  # e.g. MLflow or Comet in Accelerate: no image logging


def test_log_images_goes_through_each_trackers_log_images(fresh_accelerate_state):
    with_images, scalars_only = ListTracker(), ScalarsOnlyTracker()
    accelerator = Accelerator(cpu=True, log_with=[with_images, scalars_only])
    accelerator.init_trackers("test")
    log_images(accelerator, "reconstructions", GRID, step=3)
    ((values, step),) = with_images.images
    assert step == 3 and list(values) == ["reconstructions"] and values["reconstructions"][0] is GRID
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        log_images(accelerator, "bad", GRID.astype(np.float32), step=3)


def test_log_images_reaches_tensorboard(fresh_accelerate_state, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    log_images(accelerator, "reconstructions", GRID, step=7)
    accelerator.end_training()
    (event_dir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(event_dir))
    events.Reload()
    (image,) = events.Images("reconstructions")
    assert (image.step, image.width, image.height) == (7, 6, 4)


@pytest.mark.slow
def test_projector_script_prints_progress_checkpoints_validation_and_resume(tmp_path):
    tiny = [
        *TINY_PROJECTOR_FLAGS, "--output_dir", str(tmp_path / "out"), "--checkpointing_steps", "1",
        "--validation_steps", "1",
    ]  # fmt: skip
    run = run_and_resume("train_projector", tiny)
    log = run.stderr
    assert "Distributed environment" in log and log.count("Training ") == 2
    assert f"Saved checkpoint {tmp_path / 'out' / 'checkpoint-1'}" in log
    assert f"Resumed from {tmp_path / 'out' / 'checkpoint-1'} at step 1" in log
    assert "step 1: held-out PSNR" in log and "step 2: held-out PSNR" in log
    assert run.stdout.count("held-out PSNR:") == 2  # the final report, once per run


@pytest.mark.slow
def test_classifier_script_prints_accuracy_checkpoints_and_resume(
    make_pipeline_components, make_image_folder, tmp_path
):
    LMDPipeline(**make_pipeline_components("vq")).save_pretrained(tmp_path / "lmd")
    flags = [
        "--pretrained_path", str(tmp_path / "lmd"), "--train_data_dir", make_image_folder(tmp_path / "images"),
        "--output_dir", str(tmp_path / "out"), "--resolution", "16", "--train_batch_size", "4",
        "--eval_split_ratio", "0.25", "--eval_steps", "1", "--checkpointing_steps", "1", "--report_to", "none",
        "--latent_cache_dir", str(tmp_path / "latents"),
    ]  # fmt: skip
    run = run_and_resume("finetune_classifier", flags)
    log = run.stderr
    assert "Distributed environment" in log and "2 classes" in log
    assert f"Saved checkpoint {tmp_path / 'out' / 'checkpoint-1'}" in log
    assert f"Resumed from {tmp_path / 'out' / 'checkpoint-1'} at step 1" in log
    assert "step 0, " in log and "step 1, " in log and "step 2, " in log and "top-1" in log
