"""Random tiny PyTorch peers (diffusers) for parity tests, built on CPU in float32."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def tiny_wan_config(image: bool = False, **changes) -> dict:
    """A diffusers WanTransformer3DModel config small enough for CPU tests."""
    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
               in_channels=36 if image else 16, out_channels=16, text_dim=24, freq_dim=16,
               ffn_dim=40, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
               eps=1e-6, image_dim=20 if image else None,
               added_kv_proj_dim=24 if image else None, rope_max_seq_len=1024)
    cfg.update(changes)
    return cfg


def random_wan(config: dict, seed: int = 0):
    """A diffusers Wan transformer with every parameter random (norms and tables included)."""
    torch.manual_seed(seed)
    model = diffusers.WanTransformer3DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def random_wan_vae(seed=0, **changes):
    """A diffusers AutoencoderKLWan with random weights, gains and biases (tiny by default)."""
    kw = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
              temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
              latents_std=[1.5, 0.5, 2.0, 1.0])
    kw.update(changes)
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKLWan(**kw).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def state_dict_numpy(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def to_torch(x) -> "torch.Tensor":
    return torch.from_numpy(np.asarray(x, np.float32).copy())
