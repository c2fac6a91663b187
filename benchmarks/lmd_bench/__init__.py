"""The benchmark harness of ``benchmarks/bench_*.py``: outside the installable package, built only on it.

The scripts run as ``python benchmarks/bench_<name>.py`` (so ``benchmarks/`` is on ``sys.path``), and pytest
adds ``benchmarks`` to its ``pythonpath``; nothing in ``diffusers_lmd`` imports this folder.

- shared: ``cli`` (the scripts' common flags and result files), ``data`` (the images and cached latents every
  method trains on, in one order), ``budget`` (one wall-clock training budget: clock, optimiser, weight EMA,
  evaluation pauses, loss log), ``presets`` (the presets' base classes and lookup), ``throughput`` (cost per
  image and MFU);
- training efficiency (method.md §5, paper Tables 1, 3, 5): ``efficiency_presets``, ``efficiency_methods``,
  ``unet_methods``, ``efficiency_registry``, ``efficiency_loop``, ``efficiency_results``, ``efficiency_report``;
- generation (paper Tables 3 and 4): ``generation_presets``, ``generation_methods``, ``generation_lmd``,
  ``generation_loop``, ``generation_bench``, ``generation_report``;
- fine-tuning (paper Table 2): ``finetune_presets``, ``finetune_bench``, ``vit_baseline``.
"""
