"""camclone_jax: reference-based camera control for video generation (CamCloneMaster) in JAX/Flax.

Subpackages, from the ground up (docs/architecture.md has what each may import):
  utils, sharding, distributed  the ground floor: atomic files and param-tree paths, the mesh
                                and logical-axis rules, multi-process start-up
  models     the Wan 2.1 DiT with CamClone frame-concat conditioning, the VAE, umT5, CLIP
  diffusion  the flow objective and the samplers
  data       triplet records, the Grain pipeline, video files, the synthetic and wallpaper worlds
  tasks      the one conditioning contract of training and sampling
  convert    weight import/export between PyTorch layouts (diffusers, Wan/DiffSynth) and ours
  eval       camera accuracy, FVD, VBench metrics and the networks only they run
  inference  the sampling pipeline, its jitted loop, text and image sources, the prompt cache
  training   the training job: loop, step, data side, checkpoints, masked optimizer
Command lines: python -m camclone_jax.{train,sample,evaluate,convert,encode_prompts}.
"""

__version__ = "0.1.0"
