r"""Small-scale reproduction, ablation (paper Table 6): fine-tune whole transformer blocks
(self- and cross-attention, FFN, norms, modulation) instead of only the 3D self-attention.

  python -m camclone_jax.train --config=configs/small_blocks.py --workdir=runs/small/blocks \
      --config.base_checkpoint=runs/small/base/export --config.data.synthetic_dir=runs/small/data
"""

from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = ""):
    del arg
    config = sibling_config(__file__, "small_camclone")
    config.optim.rules = (("blocks/", "train"), (".*", None))
    return config
