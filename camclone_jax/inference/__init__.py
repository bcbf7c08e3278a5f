"""Inference: references + prompt -> video (the command line is ``python -m camclone_jax.sample``).

  pipeline  ``CamClonePipeline``: loads a checkpoint with its codec, text source and CLIP,
            conditions each task by the one contract (``camclone_jax.tasks``), ``generate``
  options   ``SampleOptions`` / ``SampleResult`` and the helpers around one sample
  denoise   the jitted sampling loop (the DiT's guided velocity stepped by diffusion.sampler)
  sources   latent codecs (Wan VAE, pixel codec), text sources (umT5, prompt cache, none),
            CLIP image tokens
  prompts   the prompt-embedding cache (``python -m camclone_jax.encode_prompts``)
  cli       the sampling command line: arguments, batch jobs files, signals

The package re-exports the pipeline's public names, so ``inference.CamClonePipeline`` works.
"""

from camclone_jax.inference.options import (SampleOptions, SampleResult, auto_mesh_axes,
                                            describe, encode_float, peak_memory, write_video)
from camclone_jax.inference.pipeline import CamClonePipeline, SamplingInterrupted
from camclone_jax.inference.sources import (CachedText, ClipImages, NoText, TextSource,
                                            UMT5Text, VAECodec, load_codec)
