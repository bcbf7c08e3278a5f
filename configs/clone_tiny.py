r"""The tiny CamClone model of the wallpaper world: camera cloning learnt on a CPU.

  python -m camclone_jax.train --config=configs/clone_tiny.py --workdir=/tmp/clone_tiny
  python -m camclone_jax.train --config=configs/clone_tiny.py:nocam --workdir=/tmp/nocam

The world (``data.kind="wallpaper"``, camclone_jax/data/wallpaper.py): 17 frames of 16x16
pixels, a camera panning and tilting over a periodic wallpaper of 4x4 cells; the pixel codec
(4x4 space-to-depth, every 4th frame) makes 5 latent frames of 4x4x48 and a patch-1 DiT sees
one token a cell (80 a segment, 240 with the two references). Triplets are rendered from
(seed, index) by the procedural Grain source (data/wallpaper_source.py): the camera reference
films another wallpaper along the target's path, V2V's content video the target's wallpaper at
another velocity; 50% I2V / 50% V2V. The held-out split (other scenes) mixes the training kind
of path with one never trained (a new velocity every latent frame).

The recipe (each key documented in camclone_jax/training/run_config.py): a 3-layer, 64-wide
DiT predicting the clean sample; the clean-sample loss on the frames after the first; noise
levels uniform in [0.5, 1] with 25% anywhere in [0, 1]; Adam 1e-3, batch 16, no clipping, all
parameters from random init; the same-scene curriculum (75% of the camera references film the
target's own wallpaper, decaying to none over 5,000 steps). The validation loss and the
reference-use gaps are measured at t = 0.95 on 64 held-out triplets every 250 steps. At the end
the export (WORKDIR/export, with world.json) clones a held-out clip into WORKDIR/sample_*.mp4
and its camera error on 16 held-out clips is printed next to the no-camera model's.

Variants (``:arg``), the ablation table of docs/results.md:
  nocam      the no-camera baseline: the camera reference is always zero (and no curriculum)
  base       a plain I2V base: no reference tokens at all
  self_attn  the paper's rule: only the 3D self-attention trains, from a base
  blocks     whole DiT blocks train, from a base (the paper's Table 6)
  channel    channel concatenation (Table 5): the 3D attention and the patch embedding train,
             from a base
The three from a base start from the shipped no-camera model unless
``--config.base_checkpoint=DIR`` names another export (e.g. a ``:base`` run's).
"""

import ml_collections

from camclone_jax.data.wallpaper import WallpaperWorld
from camclone_jax.inference.clone import NO_CAMERA
from camclone_jax.training.run_config import CLONE_RULES, base_config, clone_recipe

RULES = CLONE_RULES  # the variants' parameter splits
VARIANTS = ("", "nocam", "base", "self_attn", "blocks", "channel")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"configs/clone_tiny.py takes one of {VARIANTS[1:]} (or nothing), "
                         f"got {arg!r}")
    config = base_config()
    world = WallpaperWorld()
    channels = world.codec.latent_channels  # 48
    config.model = dict(dim=64, ffn_dim=256, num_layers=3, num_heads=2,
                        in_channels=2 * channels + 4, out_channels=channels, text_dim=32,
                        freq_dim=64, patch_size=(1, 1, 1), prediction="sample",
                        concat="channel" if arg == "channel" else "frame")
    config.data.update(kind="wallpaper", text="none", text_len=1, num_workers=0, v2v_ratio=0.5)
    config.data.wallpaper.world.update(world.to_dict())
    config.data.wallpaper.update(same_scene=0.75, same_scene_steps=5000)
    clone_recipe(config, total_steps=2000)
    config.sample.update(enabled=True, steps=20)
    config.clone_check.update(enabled=True, clips=16, steps=20)

    if arg in ("nocam", "base"):
        config.objective.conditioning = "no_camera" if arg == "nocam" else "base"
        config.data.wallpaper.same_scene = 0.0
        config.sample.enabled = config.clone_check.enabled = False
    if arg in ("self_attn", "blocks", "channel"):
        config.base_checkpoint = NO_CAMERA
        config.optim.rules = RULES[arg]
    return config
