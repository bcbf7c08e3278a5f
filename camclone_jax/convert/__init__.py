"""Weight import/export between PyTorch layouts (diffusers, original Wan/DiffSynth) and ours.

Each model kind has a module here providing ``load_<kind>(path) -> (config, params)`` (a diffusers
directory, an original/DiffSynth file, or a directory we converted earlier) and
``export_<kind>(config, params, out_dir)`` (a diffusers directory). ``python -m
camclone_jax.convert`` is the command-line front end.
"""

from camclone_jax.convert.encoders import export_t5, load_clip, load_t5, save_clip, save_t5
from camclone_jax.convert.transformer import export_transformer, load_transformer, save_transformer
from camclone_jax.convert.vae import export_vae, load_vae, save_vae
