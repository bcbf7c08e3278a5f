r"""The public CamCloneMaster recipe: Wan 2.1 1.3B (I2V-converted base), 480x832, 81 frames.

  python -m camclone_jax.train --config=configs/wan1_3b_camclone.py --workdir=runs/wan1_3b \
      --config.base_checkpoint=weights/camclone-1.3b-base --config.data.path=data/latents \
      --config.clip_checkpoint=weights/clip-vit-h-14

What the release does (REFERENCE.md section 2), in our terms: the base is Wan2.1-T2V-1.3B
converted to I2V (36-channel patch embedding, CLIP image cross-attention); the camera and content
references are frame-concatenated (3 x 21 latent frames = 98,280 tokens); only `self_attn`
trains (AdamW, lr 5e-5, no decay), bf16 compute, gradient checkpointing, batch 4; flow matching
with shift 5; 50% I2V / 50% V2V. Data: latent records made by `python -m camclone_jax.data.
prepare` then `python -m camclone_jax.data.encode --i2v --t5 ... --tokenizer ...` (VAE latents,
first-frame latents and umT5 caption embeddings). Base weights: `python -m camclone_jax.convert
import --kind transformer --src <CamCloneMaster or Wan I2V checkpoint> --out weights/...`.
"""

from camclone_jax.models.config import preset
from camclone_jax.training.run_config import base_config


def get_config(arg: str = ""):
    del arg
    config = base_config()
    config.model = preset("wan2.1-1.3b-i2v", dtype="bfloat16", remat="dots_no_batch").to_dict()
    config.base_checkpoint = "weights/camclone-1.3b-base"
    config.clip_checkpoint = "weights/clip-vit-h-14"
    config.data.update(kind="latent", frames=81, height=480, width=832, text="cached",
                       text_len=512, num_workers=4)
    config.batch_size = 4
    config.total_steps = 12_000
    config.optim.update(lr=5e-5, weight_decay=0.0, clip_norm=1.0)
    config.objective.update(timestep_sampling="shifted", shift=5.0)
    config.mesh = dict(data=-1, fsdp=1, context=1, tensor=1)
    config.checkpoint.update(every=500, keep=3)
    config.log_every = 10
    config.eval_every = 500
    return config
