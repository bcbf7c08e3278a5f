r"""The demo: CamClone training of a tiny model on the built-in synthetic dataset, on CPU.

  python -m camclone_jax.train --config=configs/demo.py --workdir=/tmp/camclone_demo
  python -m camclone_jax.train --config=configs/demo.py --workdir=/tmp/d --config.total_steps=50

On first use it renders the synthetic camera-clone dataset (3 groups, 360 triplets of 17 frames
at 64x112, plus 1 held-out group with unseen scenes and trajectories) into WORKDIR/data and
pre-encodes it with the pixel codec (the documented pixel-space switch, data.codec "pixel": 8x8
space-to-depth and every 4th frame, so latents have the Wan VAE's geometry, 5 x 8 x 14, with
192 channels). The model is a 4-layer, 128-wide Wan-style DiT with the I2V first-frame
condition, predicting the clean sample (model.prediction "sample": a head this narrow cannot
predict a velocity that carries 768-value tokens of noise). Its base weights start random
(saved to WORKDIR/base), so the demo trains the whole tiny model (optim.rules); every other
config keeps the paper's rule, where only the 3D self-attention trains (from a frozen random
base that plateaus at a validation loss of 2.25 against 1.31 when everything trains, velocity
prediction). The validation loss on held-out triplets is logged from step 0; the run ends by
exporting the model to WORKDIR/export and writing WORKDIR/sample_{i2v,v2v}.mp4 (camera ref |
first frame or content ref | result | ground truth). Its closing lines show camera cloning: the
shipped tiny CamClone model of the wallpaper world (camclone_jax/assets/models/clone_tiny,
trained by camclone_jax.wallpaper_train) samples 16 held-out I2V clips on camera paths it never
saw, and their camera error is printed next to the shipped no-camera model's and a static
camera's (config.clone_check). About 6 minutes on 2 CPU cores. Re-running resumes.
"""

import ml_collections

from camclone_jax.training.run_config import base_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = base_config()
    channels = 3 * 8 * 8  # pixel codec latent channels
    config.model = dict(dim=128, ffn_dim=256, num_layers=4, num_heads=4,
                        in_channels=2 * channels + 4, out_channels=channels, text_dim=32,
                        freq_dim=64, attention="auto", patch_size=(1, 2, 2),
                        prediction="sample")
    config.data.update(
        kind="latent", frames=17, height=64, width=112, num_workers=0, text="none", text_len=8,
        codec=dict(kind="pixel", spatial_factor=8, temporal_factor=4, scale=2.0),
        synthetic=dict(num_groups=3, seed=0, val_groups=1, val_seed=1000))
    config.batch_size = 4
    config.total_steps = 2000
    config.optim.update(rules=((".*", "train"),), lr=1e-3, warmup_steps=20, schedule="cosine",
                        end_factor=0.1)
    config.objective.update(timestep_sampling="logit_normal", shift=1.0)
    config.mesh = dict(data=-1, fsdp=1, context=1, tensor=1)
    config.mesh_devices = 1  # a one-device toy, whatever the machine has
    config.checkpoint.update(every=500, keep=2)
    config.log_every = 20
    config.eval_every = 500
    config.eval_batches = 4
    config.sample.update(enabled=True, steps=20, shift=1.0, cfg=1.0)
    # closing lines: the shipped tiny wallpaper model clones held-out cameras (issue 17)
    config.clone_check.update(enabled=True, clips=16, steps=20)
    return config
