r"""A tiny CamClone model on the rendered 3D synthetic dataset: the small-scale reproduction.

  python -m camclone_jax.train --config=configs/synthetic_tiny.py --workdir=/tmp/synthetic_tiny

On first use it renders the synthetic camera-clone dataset (3 groups, 360 triplets of 17 frames
at 64x112, plus 1 held-out group with unseen scenes and trajectories) into WORKDIR/data and
pre-encodes it with the pixel codec (the documented pixel-space switch, data.codec "pixel": 8x8
space-to-depth and every 4th frame, so latents have the Wan VAE's geometry, 5 x 8 x 14, with
192 channels). The model is a 4-layer, 128-wide Wan-style DiT with the I2V first-frame
condition, predicting the clean sample. Its base weights start random (saved to WORKDIR/base),
so the whole tiny model trains (optim.rules). The validation loss and reference-use gaps on
held-out triplets are logged from step 0; the run ends by exporting the model to WORKDIR/export
and writing WORKDIR/sample_{i2v,v2v}.mp4 (camera ref | first frame or content ref | result |
ground truth). At this size and budget it does NOT learn to clone a camera (its samples are
blurred blocks, 12 dB to the target; docs/results.md): the model that clones on a CPU is the
wallpaper world's, configs/clone_tiny.py and the demo, configs/demo.py. This config is the
whole record path (generator, ArrayRecord files, pre-encoding, the Grain loader) at a size a
CPU trains, and the test suite's tiny records config. Re-running resumes.
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
    return config
