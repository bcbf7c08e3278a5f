r"""Wan 2.1 DiT architectures: 1.3B and 14B, T2V and the CamClone I2V adaptation.

The arg picks the variant, ``<size>-<task>``: 1.3b-t2v, 1.3b-i2v (default: the public
CamCloneMaster base, 36-channel patch embedding + CLIP image cross-attention), 14b-t2v, 14b-i2v.

  python -m camclone_jax.demo --config=configs/wan2_1.py:1.3b-i2v --config.model.num_layers=2

``model`` holds DiTConfig fields; ``shape`` the latent geometry of the public release
(480x832, 81 frames -> 21 x 60 x 104 latents, three segments when frame-concatenated).
"""

import ml_collections

from camclone_jax.models.config import preset


def get_config(arg: str = "1.3b-i2v") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = preset(f"wan2.1-{arg}", dtype="bfloat16").to_dict()
    config.shape = dict(frames=81, height=480, width=832, text_len=512, image_len=257)
    config.seed = 0
    return config
