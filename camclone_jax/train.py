"""``python -m camclone_jax.train --config=configs/X.py[:arg] --workdir=DIR``: parses the flags
and runs ``camclone_jax.training.loop.train_and_evaluate`` (a notebook calls it directly)."""

from camclone_jax.training.loop import main

if __name__ == "__main__":
    main()
