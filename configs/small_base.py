r"""Small-scale reproduction, stage 1: a tiny Wan-style I2V/T2V base DiT trained from scratch.

  python -m camclone_jax.train --config=configs/small_base.py --workdir=runs/small/base \
      --config.data.synthetic_dir=runs/small/data

The whole chain (this stage, CamClone fine-tuning, the ablations and their evaluation) is
`bash benchmarks/reproduce.sh RUN_DIR`; results in docs/results.md.

Stage 0 is the pixel-space switch (data.codec "pixel", 4x4 space-to-depth and every 4th frame:
13 x 64 x 112 clips -> 4 x 16 x 28 latents of 48 channels), not a trained VAE: a tiny VAE good
enough to carry camera motion would cost most of the 2-core CPU budget by itself, and the pixel
codec is exact (encode(decode(z)) == z), so every error in the results is the DiT's. Tokens are
2 x 2 latent patches (8 x 8 pixels, 192 values), narrow enough for a 128-wide model predicting
the clean sample (model.prediction "sample").

The base model sees single videos: the target of each synthetic triplet, without references
(objective.conditioning "base"), as I2V with its first-frame condition half the time and T2V
(zero condition) otherwise, all parameters trained. The synthetic data (12 training groups,
seed 0; 1 held-out group of unseen scenes and trajectories, seed 1000) is rendered on first use
into data.synthetic_dir, which the later stages share.
"""

import ml_collections

from camclone_jax.training.run_config import base_config

CODEC = dict(kind="pixel", spatial_factor=4, temporal_factor=4, scale=2.0)
CHANNELS = 3 * 4 * 4  # pixel codec latent channels


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = base_config()
    config.model = dict(dim=128, ffn_dim=512, num_layers=4, num_heads=4,
                        in_channels=2 * CHANNELS + 4, out_channels=CHANNELS, text_dim=32,
                        freq_dim=64, attention="auto", patch_size=(1, 2, 2),
                        prediction="sample")
    config.data.update(
        kind="latent", frames=13, height=64, width=112, num_workers=0, text="none", text_len=8,
        codec=CODEC, synthetic=dict(num_groups=12, seed=0, val_groups=1, val_seed=1000))
    config.batch_size = 4
    config.total_steps = 2000
    config.objective.update(timestep_sampling="logit_normal", shift=1.0, conditioning="base")
    config.optim.update(rules=((".*", "train"),), lr=1e-3, warmup_steps=20, schedule="cosine",
                        end_factor=0.1)
    config.mesh = dict(data=-1, fsdp=1, context=1, tensor=1)
    config.mesh_devices = 1
    config.checkpoint.update(every=500, keep=2)
    config.log_every = 50
    config.eval_every = 500
    config.eval_batches = 4
    config.sample.update(enabled=False, steps=20, shift=1.0, cfg=1.0)
    return config
