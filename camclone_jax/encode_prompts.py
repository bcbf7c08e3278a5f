"""``python -m camclone_jax.encode_prompts``: builds a prompt-embedding cache
(camclone_jax/inference/prompts.py, ``--help`` for its arguments)."""

import sys

from camclone_jax.inference.prompts import main

if __name__ == "__main__":
    sys.exit(main())
