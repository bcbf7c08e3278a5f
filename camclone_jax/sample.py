"""``python -m camclone_jax.sample``: the sampling command line (camclone_jax/inference/cli.py,
``--help`` for its arguments); the library is ``camclone_jax.inference``."""

import sys

from camclone_jax.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
