"""``python -m camclone_jax.train --config=configs/X.py[:arg] --workdir=DIR``: parses the flags
and runs ``camclone_jax.training.loop.train_and_evaluate`` (a notebook calls it directly)."""

import sys

from camclone_jax.training.loop import main

HELP_FLAGS = {"--help", "-h", "-?", "--helpshort", "--helpfull"}

if __name__ == "__main__":
    try:
        main()
    except SystemExit as e:
        # absl ends a help request with status 1; asked for help and nothing else, it succeeded
        if e.code == 1 and sys.argv[1:] and set(sys.argv[1:]) <= HELP_FLAGS:
            raise SystemExit(0) from None
        raise
