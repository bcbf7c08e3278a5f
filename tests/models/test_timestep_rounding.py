"""DiTConfig.timestep_rounding="bfloat16": the release's timestep cast, inside the DiT."""

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.models import DiT, DiTConfig
from camclone_jax.models import params as params_lib

CFG = DiTConfig(dim=32, ffn_dim=64, num_layers=1, num_heads=2, in_channels=8, out_channels=8,
                text_dim=8, freq_dim=16)


def test_bfloat16_rounding_equals_rounded_timesteps():
    params = params_lib.init_params(CFG, 0)
    x = jax.random.normal(jax.random.key(0), (2, 1, 4, 4, 8))  # [b, f, h, w, C]
    text = jnp.zeros((2, 3, 8))
    t = jnp.array([999.0, 517.3])  # bf16: 1000, 516
    rounded = t.astype(jnp.bfloat16).astype(jnp.float32)
    assert float(jnp.max(jnp.abs(rounded - t))) > 1.0
    plain = DiT(CFG).apply({"params": params}, x, rounded, text)
    cast = DiT(CFG.replace(timestep_rounding="bfloat16")).apply({"params": params}, x, t, text)
    np.testing.assert_array_equal(cast, plain)
    assert not np.allclose(DiT(CFG).apply({"params": params}, x, t, text), plain)
