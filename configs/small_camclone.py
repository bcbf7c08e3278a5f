r"""Small-scale reproduction, stage 2: CamClone fine-tuning of the stage-1 base (the paper's
recipe in miniature): frame-concatenated camera and content references, 50% I2V / 50% V2V,
only the 3D self-attention trains.

  python -m camclone_jax.train --config=configs/small_camclone.py --workdir=runs/small/camclone \
      --config.base_checkpoint=runs/small/base/export --config.data.synthetic_dir=runs/small/data

The ablations build on this file and change one thing each, at the same budget (steps, batch,
learning rate): small_channel.py (channel concatenation, Table 5), small_blocks.py (whole blocks
train, Table 6), small_nocam.py (the camera reference zeroed: the no-control baseline).
"""

from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = ""):
    del arg
    config = sibling_config(__file__, "small_base")
    config.base_checkpoint = "runs/small/base/export"  # stage 1's export
    config.objective.conditioning = "camclone"
    config.optim.update(rules=(("self_attn", "train"), (".*", None)), lr=5e-4, warmup_steps=20)
    config.total_steps = 1200
    config.eval_every = 400
    config.checkpoint.update(every=400, keep=1)
    config.sample.enabled = True  # WORKDIR/sample_{i2v,v2v}.mp4 on the first held-out triplet
    return config
