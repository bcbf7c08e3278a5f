"""The shipped configs: they build, their models match the presets, overrides are locked."""

import pytest

from camclone_jax import models
from camclone_jax.models.config import DiTConfig
from configs import clone_tiny, demo, paper, synthetic_tiny, wan1_3b_camclone, wan14b_camclone, wan2_1


@pytest.mark.parametrize("arg", ["1.3b-t2v", "1.3b-i2v", "14b-t2v", "14b-i2v"])
def test_wan_configs_build_the_presets(arg):
    cfg = models.DiTConfig.from_dict(dict(wan2_1.get_config(arg).model))
    assert cfg == models.preset(f"wan2.1-{arg}", dtype="bfloat16")


@pytest.mark.parametrize("module,frames,size,batch", [
    (wan1_3b_camclone, 81, (480, 832), 4), (paper, 77, (384, 672), 64),
    (wan14b_camclone, 81, (480, 832), 8), (synthetic_tiny, 17, (64, 112), 4)])
def test_training_configs(module, frames, size, batch):
    config = module.get_config()
    cfg = DiTConfig.from_dict(dict(config.model))
    assert (config.data.frames, (config.data.height, config.data.width)) == (frames, size)
    assert config.batch_size == batch
    if module is not synthetic_tiny:  # the paper's recipe
        assert config.optim.rules == (("self_attn", "train"), (".*", None))
        assert config.optim.lr == 5e-5 and config.objective.shift == 5.0
        assert cfg.in_channels == 36 and cfg.image_dim == 1280 and cfg.dtype == "bfloat16"
    else:
        assert cfg.num_layers == 4 and config.data.codec["kind"] == "pixel"
        assert config.optim.rules == ((".*", "train"),)  # no pretrained base: all of it trains
    assert module.__doc__ and "python -m camclone_jax.train" in module.__doc__


@pytest.mark.parametrize("arg", clone_tiny.VARIANTS)
def test_clone_configs_and_the_demo(arg):
    """configs/clone_tiny.py[:arg]: the clone world, the recipe's keys, each variant's change;
    the demo is the same job on a shorter budget."""
    config = clone_tiny.get_config(arg)
    cfg = DiTConfig.from_dict(dict(config.model))
    assert config.data.kind == "wallpaper" and cfg.patch_size == (1, 1, 1)
    assert (config.objective.loss, config.objective.timestep_sampling) == ("sample", "floor")
    assert config.batch_size == 16 and config.total_steps == 2000
    assert config.objective.conditioning == {"nocam": "no_camera", "base": "base"}.get(
        arg, "camclone")
    assert cfg.concat == ("channel" if arg == "channel" else "frame")
    assert bool(config.base_checkpoint) == (arg in ("self_attn", "blocks", "channel"))
    assert config.optim.rules == clone_tiny.RULES.get(arg, clone_tiny.RULES["all"])
    assert config.data.wallpaper.same_scene == (0.0 if arg in ("nocam", "base") else 0.75)
    with pytest.raises(ValueError, match="takes one of"):
        clone_tiny.get_config("nope")
    short = demo.get_config()
    assert short.total_steps < config.total_steps and dict(short.model) == dict(
        clone_tiny.get_config().model)


def test_locked_config_rejects_unknown_keys():
    config = synthetic_tiny.get_config()
    config.lock()
    with pytest.raises(AttributeError):
        config.modle = {}
    with pytest.raises(AttributeError):
        config.optim.learning_rate = 1.0


def test_small_reproduction_configs():
    """configs/small_*.py: the stage-1 base trains everything without references; the CamClone
    stage and each ablation change exactly one thing at the same budget."""
    from configs import small_base, small_blocks, small_camclone, small_channel, small_nocam

    base = small_base.get_config()
    assert base.objective.conditioning == "base" and base.optim.rules == ((".*", "train"),)
    assert base.data.codec["kind"] == "pixel" and base.data.frames == 13
    main = small_camclone.get_config()
    assert main.objective.conditioning == "camclone"
    assert main.optim.rules == (("self_attn", "train"), (".*", None))  # the paper's rule
    assert DiTConfig.from_dict(dict(main.model)) == DiTConfig.from_dict(dict(base.model))

    def diff(a, b, prefix=""):
        out = set()
        for key in set(a) | set(b):
            va, vb = a.get(key), b.get(key)
            if isinstance(va, dict) and isinstance(vb, dict):
                out |= diff(va, vb, f"{prefix}{key}.")
            elif va != vb:
                out.add(prefix + key)
        return out

    ref = main.to_dict()
    assert diff(small_channel.get_config().to_dict(), ref) == {"model.concat", "optim.rules"}
    assert diff(small_blocks.get_config().to_dict(), ref) == {"optim.rules"}
    assert diff(small_nocam.get_config().to_dict(), ref) == {"objective.conditioning",
                                                            "sample.enabled"}
    for module in (small_base, small_camclone, small_channel, small_blocks, small_nocam):
        assert "python -m camclone_jax.train" in module.__doc__
