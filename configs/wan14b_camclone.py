r"""CamClone on Wan 2.1 14B (I2V base): 480x832, 81 frames, sharded for 8-GPU nodes or TPU pods.

  srun python -m camclone_jax.train --config=configs/wan14b_camclone.py --workdir=runs/wan14b \
      --config.base_checkpoint=weights/wan2.1-14b-i2v --config.data.path=data/latents \
      --config.clip_checkpoint=weights/clip-vit-h-14

14B does not fit one device with optimizer state: params, gradients and Adam moments are
sharded over `fsdp` (all devices of a node by default), the frozen base is stored in bf16, the
98,280-token sequence is split over `context` (2) for attention, and every block is
rematerialised. Only `self_attn` trains (about 4.2B parameters at 14B).
"""

from camclone_jax.models.config import preset
from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = ""):
    del arg
    # the release's recipe on the 14B base:
    config = sibling_config(__file__, "wan1_3b_camclone")
    config.model = preset("wan2.1-14b-i2v", dtype="bfloat16", remat="full").to_dict()
    config.base_checkpoint = "weights/wan2.1-14b-i2v"
    config.frozen_dtype = "bfloat16"
    config.batch_size = 8
    config.mesh = dict(data=1, fsdp=-1, context=2, tensor=1)
    config.checkpoint.every = 250
    return config
