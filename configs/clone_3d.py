r"""The tiny CamClone model of a world with depth: camera cloning on rendered 3D scenes.

  python -m camclone_jax.train --config=configs/clone_3d.py --workdir=/tmp/clone_3d
  python -m camclone_jax.train --config=configs/clone_3d.py:nocam --workdir=/tmp/clone_3d_nocam

The whole record path: on first use the synthetic generator (data/synthetic) renders the
Camera Clone look-alike into data.synthetic_dir (default WORKDIR/data; about 20 minutes on
two CPU cores): 600 groups of 4 locations x 10 synchronized cameras (24,000 triplets of 17
frames at 32x32, one per target video: 2,400 locations and 6,000 trajectories, so that a tiny
model cannot learn the references by heart; 96 groups with three triplets per target were
memorised: the reference helped on training triplets and not on held-out ones) and 2 held-out
groups (unseen locations, unseen trajectories), as mp4 files and ArrayRecord triplets; the
pixel codec (8x8 space-to-depth, every 4th frame) pre-encodes them to latents of 5 x 4 x 4 x
192 that the Grain loader reads. The world is narrowed to what a tiny model and a tiny camera
measure can read: pans, tilts and rolls of up to 30 degrees over the clip, at
constant speed, in strongly textured daylight scenes with objects at depth (the generator's
"textured" scenes, no subject). Rotations only: the image moves by a homography, and parallax
is absent, which is what benchmarks/clone_3d_eval.py's measure assumes.

The recipe is the clone world's (configs/clone_tiny.py): a patch-1 DiT (one token per 8x8
cell, 80 a segment, 240 with the two references), 4 layers, 128 wide, predicting the clean
sample; the clean-sample loss on the frames after the first; noise levels uniform in [0.5, 1]
with 25% anywhere; Adam 1e-3, batch 16, all parameters from random init; the same-scene
curriculum on records (data.same_scene: 75% of the camera references are the target itself at
first, decaying to none over 3,000 steps). Validation loss and reference-use gaps at t = 0.95 on
64 held-out triplets every 250 steps. Re-running resumes. At this size and a CPU budget it
does NOT clone yet: the held-out reference-use gap turns positive after 1,500 steps, is
+0.013 at 5,000 and +0.021 after 3,000 more with the learning rate annealed
(--config.optim.schedule=cosine), the reference still helps 2.6 times more on training
triplets than on held-out ones, and the samples move no better than a static camera
(docs/results.md, "Camera cloning in a world with depth").

Variants (``:arg``):
  nocam      the no-camera baseline: the camera reference is always zero (no curriculum)
  base       a plain I2V base on the same world: no reference tokens at all
  self_attn  the paper's rule: only the 3D self-attention trains, from a base
             (``--config.base_checkpoint=DIR``, default the `nocam` export under /tmp)
  aug        camera-preserving augmentation (data/augment.py): flips and transposes of whole
             triplets, the camera reference's colours reordered and inverted
and, alone or before one of those (``:tele``, ``:tele,nocam``), the world:
  tele       a 50 mm lens for every camera and turns of up to 60 degrees (rolls too), so that
             the image moves about a token (8 pixels) between latent frames instead of 1-3
             pixels (data.synthetic_dir must then differ from the wide-lens world's)
and, after the world and before a variant (``:tele,channel``, ``:tele,channel,nocam``), the model:
  channel    channel concatenation (the paper's Table 5 alternative): each reference token is
             joined to the target token at its place, so the sequence is the target's 80 tokens
             instead of 240 (the trainer's step_s on the 2-core CPU, run alone: about 0.4 s
             against 1.1 s); all parameters train
"""

import ml_collections

from camclone_jax.training.run_config import CLONE_RULES, base_config, clone_recipe

SIZE = dict(frames=17, height=32, width=32)
CODEC = dict(kind="pixel", spatial_factor=8, temporal_factor=4, scale=2.0)
WORLD = dict(moves="pan,tilt,roll", max_angle=30.0, max_roll=30.0, constant_speed=True,
             scenes="textured", lens_mm="")
TELE = dict(lens_mm="50", max_angle=60.0, max_roll=60.0)  # the "tele" world's changes
VARIANTS = ("", "nocam", "base", "self_attn", "aug")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    parts = arg.split(",") if arg else []
    world = parts.pop(0) if parts[:1] == ["tele"] else ""
    concat = parts.pop(0) if parts[:1] == ["channel"] else "frame"
    variant = parts[0] if len(parts) == 1 else ("" if not parts else None)
    if variant not in VARIANTS:
        raise ValueError(f"configs/clone_3d.py takes one of {VARIANTS[1:]} (or nothing), "
                         f"optionally after 'tele,' and then 'channel,' (or those alone), "
                         f"got {arg!r}")
    arg = variant
    config = base_config()
    channels = 3 * CODEC["spatial_factor"] ** 2  # 192 latent channels
    config.model = dict(dim=128, ffn_dim=512, num_layers=4, num_heads=4,
                        in_channels=2 * channels + 4, out_channels=channels, text_dim=32,
                        freq_dim=64, patch_size=(1, 1, 1), prediction="sample", concat=concat)
    config.data.update(kind="latent", text="none", text_len=1, num_workers=0, v2v_ratio=0.5,
                       codec=CODEC, same_scene=0.75, same_scene_steps=3000, **SIZE)
    config.data.synthetic = dict(num_groups=600, seed=0, val_groups=2, val_seed=1000,
                                 triplets_per_target=1, **WORLD)
    if world:
        config.data.synthetic.update(TELE)
    clone_recipe(config, total_steps=3000)
    config.sample.update(enabled=True, steps=20, cfg=1.0)  # no text: nothing to guide

    if arg in ("nocam", "base"):
        config.objective.conditioning = "no_camera" if arg == "nocam" else "base"
        config.data.same_scene = 0.0
    if arg == "aug":
        config.data.augment = dict(geometry=True, ref_colour=True)
    if arg == "self_attn":
        config.base_checkpoint = "/tmp/clone_3d_nocam/export"
        config.optim.rules = CLONE_RULES[arg]
    return config
