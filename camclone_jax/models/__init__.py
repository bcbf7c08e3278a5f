"""Models: the CamClone DiT (Wan 2.1 transformer with frame-concatenated reference conditioning)."""

from camclone_jax.models.config import PRESETS, DiTConfig, preset
from camclone_jax.models.dit import DiT
from camclone_jax.models.params import count_params, first_frame_condition, init_params, param_shapes
from camclone_jax.models.vae import WanVAE, WanVAEConfig
