"""The LMD training loop (method.md §2-§3), shared by ``training/train_lmd.py``, the demo, benchmarks and tests.

Each optimiser step draws the mask ratio from ``LMDMaskScheduler.get_mask_ratio(global_step, seed=seed)``, a pure
function of the step (and, for MAR's random ratio, of the seed), so every rank uses the same ratio and a resumed
run continues the same curve. Masks, flips, label and caption dropout and the diffusion head's noise come from a
generator seeded by (seed, step, micro-batch, rank): a resumed run repeats them exactly. Class labels and
captions travel with the batch (through the latent cache when it is used); captions become text embeddings of
the frozen text encoder, cached once per distinct caption. Each ``checkpoint-N/`` also holds ``transformer/``
(:func:`~diffusers_lmd.training.lmd.outputs.register_transformer_hooks`); validation runs on the EMA weights with
``--use_ema``; with ``--push_to_hub`` the Hub repository is created before the data is loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from ...data import build_datasets
from ...evaluation import ReconstructionMetrics, evaluate_reconstruction, reconstruction_grid
from ...metrics import EfficiencyTracker
from ...models import LMDModel
from ...pipelines.text_inputs import NULL_PROMPT
from ...schedulers import LMDMaskScheduler
from ..args import (
    accelerator_kwargs,
    check_lmd_args,
    conditioning_dropout,
    data_config,
    effective_learning_rate,
    lmd_model_kwargs,
    optimizer_config,
    total_batch_size,
)
from ..checkpointing import load_checkpoint, resolve_resume_path, save_checkpoint
from ..ema import ema_weights
from ..hub import HubUploader
from ..latent_cache import default_cache_dir, latents_for_batch
from ..logging import JsonlLogger, ProgressBar, log_images, setup_logging
from ..optim import build_ema, build_lr_scheduler, build_optimizer, register_ema_hooks
from ..pretrained import load_pretrained_lmd, resolve_pretrained
from ..runtime import build_accelerator, weight_dtype
from ..text_cache import TextEmbeddings, build_text_cache
from .evaluation import evaluation_model
from .outputs import (
    LOG_FILE,
    LMDTrainingResult,
    final_weights,
    finish_run,
    register_transformer_hooks,
    write_checkpoint_folder,
)
from .setup import (
    adapt_pretrained_model,
    build_lmd_model,
    build_train_dataloader,
    check_finite_loss,
    gather_step_stats,
    load_projector,
    load_text_encoder,
    place_projector,
    projector_dtype,
    set_estimated_latent_stats,
    set_projector_codebook,
    step_generator,
    tracker_config,
)

__all__ = ["LMDTrainer", "LMDTrainingResult", "train_lmd"]

# The card's names of the training-efficiency metrics (their definitions: the project's docs/method.md §5).
CARD_EFFICIENCY_NAMES = {
    "mit_s": "MIT: mean seconds per optimiser step",
    "mli": "MLI: mean steps between loss decreases",
    "mlt_s": "MLT: MIT x MLI (s)",
}
logger = get_logger(__name__)  # rank-aware: the main process speaks (setup_logging sends it to the console)


class LMDTrainer:
    """One LMD training run: built from the flags in ``__init__`` (failing early on bad input), run by :meth:`train`.

    Args:
        args: flags from :func:`~diffusers_lmd.training.args.parse_lmd_args`.
    """

    def __init__(self, args: argparse.Namespace):
        check_lmd_args(args)
        self.args = args
        accelerator = build_accelerator(args.output_dir, **accelerator_kwargs(args), compile=args.compile)
        self.accelerator = accelerator
        setup_logging(accelerator)
        pretrained, self.vae = None, None
        if args.pretrained_model_name_or_path:  # --revision / --variant then apply to it
            flag, where = "--pretrained_model_name_or_path", dict(revision=args.revision, variant=args.variant)
            source = resolve_pretrained(
                args.pretrained_model_name_or_path, **where, cache_dir=args.cache_dir, flag=flag
            )
            pretrained, self.vae = load_pretrained_lmd(source, flag, with_projector=not args.projector_path)
        if args.projector_path:
            where = (
                dict(revision=None, variant=None) if pretrained else dict(revision=args.revision, variant=args.variant)
            )
            self.vae = load_projector(args.projector_path, args.projector_subfolder, cache_dir=args.cache_dir, **where)
        if self.vae is None:
            raise ValueError(
                f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path} is an LMDModel without a "
                "projector: pass --projector_path (the projector it was trained on)."
            )
        self.hub = HubUploader.from_args(args, accelerator.is_main_process)  # a bad token or repo fails now, not later
        # The data first: a class-conditional model's size depends on its classes. Datasets draw no global RNG. One
        # process loads (downloads) and checks the images first; the others then read datasets' cache.
        with accelerator.main_process_first():
            self.data = data_config(args)
            train_dataset, self.eval_dataset = build_datasets(self.data, cache_dir=args.cache_dir)
        self.class_names = train_dataset.class_names if args.label_column else None
        self.tokenizer = self.text_encoder = None
        if args.caption_column:
            self.tokenizer, self.text_encoder = load_text_encoder(args.text_encoder_name_or_path, args.cache_dir)
        set_seed(args.seed)
        conditions = dict(
            num_class_embeds=len(self.class_names) if self.class_names else None,
            cross_attention_dim=self.text_encoder.config.hidden_size if self.text_encoder is not None else None,
        )
        if pretrained is None:
            model = build_lmd_model(self.vae, **lmd_model_kwargs(args), **conditions)
        else:
            dropout = conditioning_dropout(args)
            model = adapt_pretrained_model(
                pretrained, self.vae, args.resolution, class_dropout_prob=dropout, **conditions
            )
            args.head_type = model.config.head_type  # for the card and evaluation
        if args.attention_backend:
            model.set_attention_backend(args.attention_backend)
        if args.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        if accelerator.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)

        self.vae = place_projector(self.vae, accelerator, projector_dtype(args.upcast_projector, self.vae, accelerator))
        if args.estimate_latent_stats:  # on the device, main process
            batches = dict(batch_size=args.encode_batch_size, num_workers=args.dataloader_num_workers)
            set_estimated_latent_stats(self.vae, train_dataset, accelerator, **batches)
        set_projector_codebook(model, self.vae)  # the codes in this run's normalised latent space
        train_loader, self.cache = build_train_dataloader(
            accelerator,
            self.vae,
            train_dataset,
            self.data,
            batch_size=args.train_batch_size,
            seed=args.seed,
            cache_latents=args.cache_latents,
            cache_dir=args.latent_cache_dir,
            encode_batch_size=args.encode_batch_size,
        )
        self.text = self._text_embeddings(train_dataset)

        batches_per_process = math.ceil(len(train_loader) / accelerator.num_processes)
        self.steps_per_epoch = math.ceil(batches_per_process / args.gradient_accumulation_steps)
        self.max_train_steps = args.max_train_steps or args.num_train_epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.max_train_steps / self.steps_per_epoch)
        self.learning_rate = effective_learning_rate(args, accelerator.num_processes)
        optim = optimizer_config(args)
        optimizer = build_optimizer(model, optim, self.learning_rate)
        lr_scheduler = build_lr_scheduler(optimizer, optim, self.max_train_steps, accelerator.num_processes)
        self.mask_scheduler = LMDMaskScheduler(
            args.mask_schedule, args.mask_ratio_min, args.mask_ratio_max, self.max_train_steps
        )
        register_transformer_hooks(accelerator)  # checkpoint-N/transformer/, loadable with LMDModel.from_pretrained
        self.ema = build_ema(model, optim) if args.use_ema else None
        if self.ema is not None:
            register_ema_hooks(accelerator, self.ema)
        self.model, self.optimizer, self.train_loader, self.lr_scheduler = accelerator.prepare(
            model, optimizer, train_loader, lr_scheduler
        )
        if self.ema is not None:
            self.ema.to(accelerator.device)

        self.global_step = 0
        self.efficiency = EfficiencyTracker()  # MIT / MLI / MLT (method.md §5), logged every step
        self.result = LMDTrainingResult(args.output_dir, 0, None, None, 0.0)
        if self.cache is not None:
            self.result.cache_seconds, self.result.cache_reused = self.cache.seconds, self.cache.reused

    def _text_embeddings(self, train_dataset) -> TextEmbeddings | None:
        """Captions -> embeddings of the frozen text encoder: cached per distinct caption with --cache_latents."""
        if self.text_encoder is None:
            return None
        args, accelerator = self.args, self.accelerator
        self.text_encoder.to(accelerator.device, dtype=weight_dtype(accelerator))
        table = None
        if args.cache_latents:
            captions = train_dataset.dataset[args.caption_column]
            cache_dir = args.latent_cache_dir or default_cache_dir()
            table = build_text_cache(
                accelerator, self.tokenizer, self.text_encoder, captions, cache_dir, args.encode_batch_size
            )
        return TextEmbeddings(self.tokenizer, self.text_encoder, table)

    def mask_ratio(self, step: int) -> float:
        """The mask ratio of optimiser ``step``: a pure function of (seed, step)."""
        return self.mask_scheduler.get_mask_ratio(step, seed=self.args.seed)

    def conditions(self, batch: dict, generator: torch.Generator, device: torch.device) -> dict:
        """The model's condition inputs for a batch: class labels, and caption embeddings after caption dropout
        (drawn from the step's generator; label dropout happens inside the model, from the same generator)."""
        kwargs = {}
        if self.class_names is not None:
            kwargs["class_labels"] = batch["class_labels"].to(device)
        if self.text is not None:
            captions = list(batch["caption"])
            drop = torch.rand(len(captions), generator=generator) < self.args.conditioning_dropout_prob
            captions = [NULL_PROMPT if dropped else caption for caption, dropped in zip(captions, drop.tolist())]
            kwargs["encoder_hidden_states"], kwargs["encoder_attention_mask"] = self.text(captions, device)
        return kwargs

    def evaluation_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` as held-out evaluation calls it (:mod:`~diffusers_lmd.training.lmd.evaluation`)."""
        null_text = self.text([NULL_PROMPT], self.accelerator.device) if self.text is not None else None
        return evaluation_model(model, null_text)

    # ------------------------------------------------------------------------------------------------ run
    def train(self) -> LMDTrainingResult:
        """Resume if asked, train to ``max_train_steps``, then save and evaluate the final model."""
        args, accelerator = self.args, self.accelerator
        if accelerator.is_main_process and accelerator.log_with:
            accelerator.init_trackers(args.tracker_project_name or "train_lmd", config=tracker_config(args))
        resumed = self._resume()
        self.log = JsonlLogger(
            os.path.join(args.output_dir, LOG_FILE),
            resume_step=self.global_step if resumed else None,
            enabled=accelerator.is_main_process,
        )
        self._log_plan()
        self.progress = ProgressBar(
            self.max_train_steps, initial=self.global_step, disable=not accelerator.is_local_main_process
        )
        self.clock_start = time.perf_counter() - self.log.time_offset
        loop_start = time.perf_counter()
        self.efficiency.restart_clock()
        try:
            for epoch in range(self.global_step // self.steps_per_epoch, self.num_epochs):
                if self.global_step >= self.max_train_steps:
                    break
                self._train_epoch(epoch)
        finally:
            self.progress.close()
        self.result.global_step, self.result.train_seconds = self.global_step, time.perf_counter() - loop_start
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self._finish()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.result

    def _resume(self) -> bool:
        """Restore the newest or given checkpoint: weights, optimiser, LR, RNG, EMA, step count."""
        path = resolve_resume_path(self.args.output_dir, self.args.resume_from_checkpoint)
        if path is None:
            return False
        state = load_checkpoint(self.accelerator, path)
        self.global_step = state["global_step"]
        if "efficiency" in state:
            self.efficiency.load_state_dict(state["efficiency"])
        logger.info("Resumed from %s at step %d", path, self.global_step)
        return True

    def _log_plan(self) -> None:
        images = total_batch_size(self.args, self.accelerator.num_processes)
        source = "cached latents" if self.cache else "online encoding"
        logger.info(
            "Training %d steps (%d epochs of %d), %d images per step, lr %.3g, %s",
            self.max_train_steps, self.num_epochs, self.steps_per_epoch, images, self.learning_rate, source,
        )  # fmt: skip

    def _train_epoch(self, epoch: int) -> None:
        """Run the rest of ``epoch``: skip the batches a resumed run already used, then step."""
        epoch_start, epoch_cpu, first_step = time.perf_counter(), time.process_time(), self.global_step
        self.train_loader.set_epoch(epoch)
        skip = (self.global_step - epoch * self.steps_per_epoch) * self.args.gradient_accumulation_steps
        batches = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        micro, losses, images = 0, [], 0
        for batch in batches:
            loss, num_images, rank_ratios = self._micro_step(batch, micro)
            micro, losses, images = micro + 1, losses + [loss], images + num_images
            if not self.accelerator.sync_gradients:
                continue
            self._end_step(epoch, sum(losses) / len(losses), images, rank_ratios)
            micro, losses, images = 0, [], 0
            if self.global_step >= self.max_train_steps:
                break
        if self.global_step - first_step == self.steps_per_epoch:
            self.result.epoch_seconds.append(time.perf_counter() - epoch_start)
            self.result.epoch_cpu_seconds.append(time.process_time() - epoch_cpu)

    def _micro_step(self, batch: dict, micro: int) -> tuple[float, int, list[float]]:
        """Forward and backward on one micro-batch (the update happens on the last of an accumulation)."""
        args, accelerator, model = self.args, self.accelerator, self.model
        mask_ratio = self.mask_ratio(self.global_step)
        generator = step_generator(args.seed, self.global_step, micro, accelerator.process_index)
        with accelerator.accumulate(model):
            latents = latents_for_batch(batch, None if self.cache else self.vae, args.random_flip, generator)
            conditions = self.conditions(batch, generator, latents.device)
            # A tuple: Accelerate's fp32 output conversion cannot rebuild LMDModelOutput.
            _, _, loss = model(latents, mask_ratio=mask_ratio, generator=generator, return_dict=False, **conditions)
            mean_loss, rank_ratios = gather_step_stats(accelerator, loss, mask_ratio)
            self.step_lr = self.optimizer.param_groups[0]["lr"]  # the rate of this step's update
            check_finite_loss(mean_loss, self.global_step, mask_ratio, self.step_lr, args.output_dir, latents)
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, latents.shape[0] * accelerator.num_processes, rank_ratios

    def _end_step(self, epoch: int, loss: float, images: int, rank_ratios: list[float]) -> None:
        """After an update: EMA, logs, checkpoint and validation at their intervals."""
        args, accelerator = self.args, self.accelerator
        mask_ratio = self.mask_ratio(self.global_step)
        lr = self.step_lr
        self.global_step += 1
        if self.ema is not None:
            self.ema.step(self.model.parameters())
        self.efficiency.update(loss)
        img_s = self.progress.update(loss, mask_ratio, lr, images)
        scalars = {"loss": loss, "mask_ratio": mask_ratio, "lr": lr, "img_s": img_s, **self.efficiency.summary()}
        record = {"step": self.global_step, **scalars, "time": round(time.perf_counter() - self.clock_start, 4)}
        if accelerator.num_processes > 1:
            record["rank_mask_ratios"] = rank_ratios
        self.log.log({**record, "epoch": epoch})
        accelerator.log(scalars, step=self.global_step)
        self.result.final_loss = loss
        if self.global_step % args.checkpointing_steps == 0:
            extra = {"efficiency": self.efficiency.state_dict()}
            save_checkpoint(accelerator, args.output_dir, self.global_step, args.checkpoints_total_limit, extra)
            if self.hub is not None:
                self.hub.push_checkpoint(self.global_step, self._write_checkpoint_folder)
        if self.global_step % args.validation_steps == 0 and accelerator.is_main_process:
            with ema_weights(self.ema, accelerator.unwrap_model(self.model)):  # store, copy the EMA in, restore
                self.result.eval = self._validate()
        self.efficiency.restart_clock()  # logging, checkpoints and validation are not step time

    def _pipeline_extras(self) -> dict:
        """The saved pipeline's tokenizer, text encoder, ``id2label`` and ``sampling_defaults``."""
        extras = dict(tokenizer=self.tokenizer, text_encoder=self.text_encoder)
        if self.class_names is not None:
            extras["id2label"] = dict(enumerate(self.class_names))
        defaults = {"guidance_scale": self.args.sampling_guidance_scale, "temperature": self.args.sampling_temperature}
        extras["sampling_defaults"] = {key: value for key, value in defaults.items() if value is not None} or None
        return extras

    def _write_checkpoint_folder(self, folder: str) -> None:
        """``--hub_strategy every_save``: the pipeline as it is now (EMA weights with ``--use_ema``) and its card,
        from a float32 snapshot so that the model being trained is left untouched."""
        snapshot = LMDModel.from_config(self.accelerator.unwrap_model(self.model).config)
        snapshot.load_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
        if self.ema is not None:
            self.ema.copy_to(snapshot.parameters())
        metrics = {"optimiser steps": self.global_step, "training loss": self.result.final_loss}
        write_checkpoint_folder(
            folder,
            self.args,
            self.vae,
            snapshot,
            self.mask_scheduler,
            metrics,
            self._pipeline_extras(),
            self.hub.repo_id,
        )

    def _validate(self) -> ReconstructionMetrics:
        """Held-out PSNR, and a reconstruction grid for the trackers (main process; EMA weights with --use_ema)."""
        unwrapped = self.evaluation_model(self.accelerator.unwrap_model(self.model))
        metrics = evaluate_reconstruction(
            unwrapped,
            self.vae,
            self.eval_dataset,
            batch_size=self.args.eval_batch_size,
            max_images=self.args.max_eval_samples,
        )
        self.accelerator.log({"eval_psnr": metrics.psnr}, step=self.global_step)
        if self.accelerator.trackers:
            grid = reconstruction_grid(unwrapped, self.vae, self.eval_dataset)
            log_images(self.accelerator, "reconstructions", grid, self.global_step)
        self.log.log({"step": self.global_step, "eval_psnr": metrics.psnr})
        logger.info("step %d: held-out PSNR %.2f dB", self.global_step, metrics.psnr)
        return metrics

    def _finish(self) -> None:
        """Main process: evaluate the final weights (EMA if kept) and write the pipeline folder."""
        args = self.args
        final_model = final_weights(self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False), self.ema)
        evaluated = self.evaluation_model(final_model)
        if self.ema is not None or self.global_step % args.validation_steps:  # else just measured at this step
            self.result.eval = evaluate_reconstruction(
                evaluated,
                self.vae,
                self.eval_dataset,
                batch_size=args.eval_batch_size,
                max_images=args.max_eval_samples,
            )
            self.log.log({"step": self.global_step, "eval_psnr": self.result.eval.psnr})
        metrics = {"optimiser steps": self.global_step, "final training loss": self.result.final_loss}
        summary = self.efficiency.summary()
        metrics.update({CARD_EFFICIENCY_NAMES[k]: v for k, v in summary.items() if k in CARD_EFFICIENCY_NAMES})
        finish_run(
            args,
            self.vae,
            final_model,
            self.mask_scheduler,
            self.eval_dataset,
            self.result.eval,
            metrics,
            evaluated=evaluated,
            pipeline_extras=self._pipeline_extras(),
            hub=self.hub,
        )


def train_lmd(args: argparse.Namespace) -> LMDTrainingResult:
    """Train an ``LMDModel`` on a frozen projector's latents and save an ``LMDPipeline`` to ``args.output_dir``.

    ``args`` comes from :func:`~diffusers_lmd.training.args.parse_lmd_args`. Raises ``ValueError`` before any
    training for bad flags or a projector that does not load, and
    :class:`~diffusers_lmd.training.runtime.NonFiniteLossError` on a NaN loss.
    """
    return LMDTrainer(args).train()
