"""``python -m camclone_jax.wallpaper_train --workdir DIR``: trains the tiny wallpaper-world
CamClone model (camclone_jax/training/wallpaper.py, ``--help`` for its arguments)."""

import sys

from camclone_jax.training.wallpaper import main

if __name__ == "__main__":
    sys.exit(main())
