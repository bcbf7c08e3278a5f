r"""Small-scale reproduction, ablation (paper Table 5): channel instead of frame concatenation.

  python -m camclone_jax.train --config=configs/small_channel.py --workdir=runs/small/channel \
      --config.base_checkpoint=runs/small/base/export --config.data.synthetic_dir=runs/small/data

The references join the target on the channel axis, so the patch embedding takes 3x the
channels: the base's kernel gets zero rows for them (checkpoint.expand_for_channel_concat) and
trains along with the 3D self-attention. Everything else as small_camclone.py.
"""

from camclone_jax.training.run_config import sibling_config


def get_config(arg: str = ""):
    del arg
    config = sibling_config(__file__, "small_camclone")
    config.model["concat"] = "channel"
    config.optim.rules = (("self_attn", "train"), ("patch_embedding", "train"), (".*", None))
    return config
