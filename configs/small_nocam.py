r"""Small-scale reproduction, the no-control baseline: CamClone fine-tuning with the camera
reference latent zeroed (objective.conditioning "no_camera"; sampled the same way), so the
model sees the content reference (V2V) or first frame (I2V) but no camera motion.

  python -m camclone_jax.train --config=configs/small_nocam.py --workdir=runs/small/nocam \
      --config.base_checkpoint=runs/small/base/export --config.data.synthetic_dir=runs/small/data
"""

from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = ""):
    del arg
    config = sibling_config(__file__, "small_camclone")
    config.objective.conditioning = "no_camera"
    config.sample.enabled = False
    return config
