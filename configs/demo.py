r"""The demo: a tiny CamClone DiT on CPU, small enough for a laptop and the test suite.

  python -m camclone_jax.demo --config=configs/demo.py
  python -m camclone_jax.demo --config=configs/demo.py --config.model.attention=xla

It runs the CamClone forward pass (target, camera reference and content reference
frame-concatenated) and a gradient step restricted to the 3D attention, and prints shapes,
parameter counts and timings. Synthetic inputs at the shape of the embedded synthetic dataset
(17 frames at 64x112 pixels -> 5 x 8 x 14 latents).
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = ml_collections.ConfigDict()
    config.model = dict(dim=128, ffn_dim=256, num_layers=4, num_heads=4, in_channels=16,
                        out_channels=16, text_dim=64, freq_dim=64, attention="auto")
    config.shape = dict(frames=17, height=64, width=112, text_len=16, image_len=0)
    config.batch_size = 2
    config.steps = 3
    config.seed = 0
    return config
