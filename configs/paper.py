r"""The paper's training run (section 5.1): 384x672, 77 frames, batch 64, 12,000 steps, 64 GPUs.

  srun python -m camclone_jax.train --config=configs/paper.py --workdir=runs/paper \
      --config.base_checkpoint=weights/camclone-1.3b-base --config.data.path=data/latents \
      --config.clip_checkpoint=weights/clip-vit-h-14

(see launch/slurm_gpu.sbatch for 8 nodes x 8 GPUs). The paper's base model is not public, so
this uses the release's Wan 2.1 1.3B I2V-converted base. 77 frames -> 20 latent frames, 3 x 20 x
48 x 84 / 4 = 60,480 tokens per sample. Only the 3D attention trains, Adam lr 5e-5; one
example per GPU (batch 64 on 64 devices), full rematerialisation.
"""

from camclone_jax.models.config import preset
from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = ""):
    del arg
    # the release's recipe, at the paper's scale:
    config = sibling_config(__file__, "wan1_3b_camclone")
    config.model = preset("wan2.1-1.3b-i2v", dtype="bfloat16", remat="full").to_dict()
    config.data.update(frames=77, height=384, width=672)
    config.batch_size = 64
    return config
