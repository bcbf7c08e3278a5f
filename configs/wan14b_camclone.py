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
from camclone_jax.run_config import base_config


def get_config(arg: str = ""):
    del arg
    config = base_config()
    config.model = preset("wan2.1-14b-i2v", dtype="bfloat16", remat="full").to_dict()
    config.base_checkpoint = "weights/wan2.1-14b-i2v"
    config.clip_checkpoint = "weights/clip-vit-h-14"
    config.frozen_dtype = "bfloat16"
    config.data.update(kind="latent", frames=81, height=480, width=832, text="cached",
                       text_len=512, num_workers=4)
    config.batch_size = 8
    config.total_steps = 12_000
    config.optim.update(lr=5e-5, weight_decay=0.0, clip_norm=1.0)
    config.objective.update(timestep_sampling="shifted", shift=5.0)
    config.mesh = dict(data=1, fsdp=-1, context=2, tensor=1)
    config.checkpoint.update(every=250, keep=3)
    config.eval_every = 500
    return config
