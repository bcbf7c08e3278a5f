r"""The demo: a tiny CamClone model learns to clone cameras on the CPU, from random init.

  python -m camclone_jax.train --config=configs/demo.py --workdir=/tmp/camclone_demo
  python -m camclone_jax.train --config=configs/demo.py --workdir=/tmp/d --config.total_steps=50

It is configs/clone_tiny.py (the wallpaper world: a camera panning and tilting over periodic
textures, 17 frames of 16x16 pixels, triplets rendered on the fly by the procedural Grain
source; a 3-layer, 64-wide CamClone DiT; the camera reference enters only as frame-concatenated
tokens) on a shorter budget. It prints the falling loss, the held-out validation loss and the
reference-use gaps (validation loss with the camera or content reference zeroed minus with it:
they rise from 0 when the model starts reading its references), checkpoints, exports the model
to WORKDIR/export and writes WORKDIR/sample_{i2v,v2v}.mp4 (camera ref | first frame or content |
result | ground truth, 8x upscaled and labelled) of a held-out clip on a camera path of a kind
never trained. Its closing lines score the model it has just trained on 16 held-out clips of
such paths: its camera error next to its own with the camera reference zeroed, the shipped
no-camera model's and a static camera's. The full recipe (2,000 steps, the shipped model) is
configs/clone_tiny.py. Re-running resumes.
"""

import os

import ml_collections

from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = sibling_config(os.path.abspath(__file__), "clone_tiny")
    config.total_steps = 700
    config.log_every = 50
    config.eval_every = 250
    config.checkpoint.every = 250
    return config
