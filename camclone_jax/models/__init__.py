"""Models: the CamClone DiT (Wan 2.1 with frame-concatenated references), the Wan VAE, umT5 and CLIP."""

from camclone_jax.models.config import PRESETS, DiTConfig, preset
from camclone_jax.models.dit import DiT
from camclone_jax.models.params import count_params, first_frame_condition, init_params, param_shapes
from camclone_jax.models.vae import WanVAE, WanVAEConfig
from camclone_jax.models.t5 import T5Config, UMT5Encoder, encode_prompts, init_t5_params
from camclone_jax.models.clip import CLIPVisionConfig, CLIPVisionTower, encode_images, preprocess_images
from camclone_jax.models.tokenizer import load_tokenizer
