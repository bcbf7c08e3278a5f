"""Training: ``python -m camclone_jax.train --config=configs/X.py --workdir=DIR``.

  loop          ``train_and_evaluate(config, workdir)``: the whole job in phases (mesh, data,
                model and optimizer, shardings and step, checkpoint restore, the loop, export)
  step          the jitted train step: flow loss on the conditioned DiT, masked update, EMA
  data          the job's data side: the dataset on disk or the procedural clone world, the
                Grain pipeline config, batches
  outputs       what a finished run writes: the export, sample videos, the clone check
  checkpoint    orbax checkpoints of the trainable state, the base model, the export
  optim         the masked optimizer: (regex, label) rules, every parameter covered
  observe       metrics (TensorBoard, JSON lines), progress lines, FLOPs and MFU
  run_config    the defaults every configs/*.py builds on
  workdir_lock  one job per workdir
"""
