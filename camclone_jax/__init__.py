"""camclone_jax: reference-based camera control for video generation (CamCloneMaster) in JAX/Flax.

Subpackages:
  models   the Wan 2.1 DiT with CamClone frame-concat conditioning (and later the VAE, encoders)
  convert  weight import/export between PyTorch layouts (diffusers, original Wan/DiffSynth) and ours
  data     synthetic camera-clone data and the triplet pipeline
"""

__version__ = "0.1.0"
