"""The demo entry point and the shipped configs."""

import subprocess
import sys

import pytest

from camclone_jax import demo, models
from configs import demo as demo_config
from configs import wan2_1


def test_demo_runs_camclone_forward_and_attention_only_steps():
    config = demo_config.get_config()
    config.model.num_layers = 2
    config.steps = 3
    result = demo.run(config)
    assert result["output_shape"] == result["latent_shape"] == (2, 5, 8, 14, 16)
    assert result["tokens_per_sample"] == 3 * 5 * 4 * 7
    assert 0 < result["trainable_params"] < result["params"]
    assert result["losses"][-1] < result["losses"][0]  # Adam on self_attn lowers the loss
    assert "trainable: self_attn" in demo.report(result)


def test_demo_command_line_with_override_and_locked_config():
    cmd = [sys.executable, "-m", "camclone_jax.demo", "--config=configs/demo.py",
           "--config.model.num_layers=1", "--config.steps=2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "prediction shape       (2, 5, 8, 14, 16)" in out.stdout
    typo = subprocess.run(cmd[:3] + ["--config.modle.num_layers=1"], capture_output=True,
                          text=True, timeout=300)
    assert typo.returncode != 0 and "modle" in typo.stderr


@pytest.mark.parametrize("arg", ["1.3b-t2v", "1.3b-i2v", "14b-t2v", "14b-i2v"])
def test_wan_configs_build_the_presets(arg):
    cfg = models.DiTConfig.from_dict(dict(wan2_1.get_config(arg).model))
    assert cfg == models.preset(f"wan2.1-{arg}", dtype="bfloat16")


def test_latent_shape_rules():
    assert demo.latent_shape(81, 480, 832) == (21, 60, 104)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        demo.latent_shape(80, 480, 832)
