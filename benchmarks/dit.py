"""Our DiT vs diffusers' WanTransformer3DModel on the same device: forward and forward+backward.

  python benchmarks/dit.py                       # mid-size config on CPU (docs/performance.md figures)
  python benchmarks/dit.py --layers 2 --frames 3 --height 16 --width 28 --repeats 2   # quick

Same config, same weights, same inputs, float32, runs alternating between the two frameworks
(medians of ``--repeats``), CamClone-shaped input: three frame-concatenated segments. The
backward pass computes gradients of the 3D self-attention only (the CamClone trainable subset)
in both. Then the same shapes are timed piece by piece to show where the time goes: the
attention kernels (self + cross), the dense matmuls (q/k/v/o and FFN), and the rest
(norms, modulation, RoPE, embeddings).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from camclone_jax import models
from camclone_jax.convert import transformer as conv
from camclone_jax.models.attention import dot_product_attention
from camclone_jax.utils import flatten_params, unflatten_params


def _time(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _alternate(pairs, repeats):
    """Times several (name, fn) alternately; returns {name: median seconds}."""
    for _, fn in pairs:
        fn()  # warm-up / compile
    times = {name: [] for name, _ in pairs}
    for _ in range(repeats):
        for name, fn in pairs:
            times[name] += _time(fn, 1)
    return {name: statistics.median(v) for name, v in times.items()}


def build(args):
    """The same random model in both frameworks plus CamClone-shaped inputs."""
    from diffusers import WanTransformer3DModel

    diff_cfg = dict(patch_size=(1, 2, 2), num_attention_heads=args.dim // args.head_dim,
                    attention_head_dim=args.head_dim, in_channels=16, out_channels=16,
                    text_dim=args.text_dim, freq_dim=256, ffn_dim=args.ffn, num_layers=args.layers,
                    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    torch.manual_seed(0)
    peer = WanTransformer3DModel(**diff_cfg).eval()
    state = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    tiles = {k: v for k, v in (("flash_block_q", args.block_q), ("flash_block_kv", args.block_kv)) if v}
    cfg = models.DiTConfig.from_diffusers(diff_cfg, attention=args.attention, **tiles)
    params = jax.device_put(conv.params_from_torch(state, cfg, "diffusers"))
    rng = np.random.default_rng(0)
    seg = (1, args.frames, args.height, args.width, 16)
    lat, cam, cont = (rng.standard_normal(seg).astype(np.float32) for _ in range(3))
    text = rng.standard_normal((1, args.text_len, args.text_dim)).astype(np.float32)
    return cfg, params, peer, lat, cam, cont, text


def model_timings(args, cfg, params, peer, lat, cam, cont, text):
    model = models.DiT(cfg)
    t = jnp.array([500.0])
    j_lat, j_cam, j_cont, j_text = map(jnp.asarray, (lat, cam, cont, text))
    flat = flatten_params(params)
    train = {k: v for k, v in flat.items() if "self_attn" in k}
    frozen = {k: v for k, v in flat.items() if "self_attn" not in k}

    def jax_loss(train):
        v = model.apply({"params": unflatten_params({**frozen, **train})}, j_lat, t, j_text,
                        cam_latents=j_cam, content_latents=j_cont)
        return jnp.mean(jnp.square(v))

    jax_fwd = jax.jit(jax_loss)
    jax_bwd = jax.jit(jax.grad(jax_loss))

    full = np.concatenate([lat, cam, cont], axis=1)
    x = torch.from_numpy(full).permute(0, 4, 1, 2, 3).contiguous()
    tt, ttext = torch.tensor([500.0]), torch.from_numpy(text)
    for name, p in peer.named_parameters():
        p.requires_grad_(".attn1." in name)
    frames = args.frames

    def torch_fwd():
        with torch.no_grad():
            out = peer(x, tt, ttext, return_dict=False)[0][:, :, :frames]
            return out.square().mean().item()

    def torch_bwd():
        peer.zero_grad(set_to_none=True)
        out = peer(x, tt, ttext, return_dict=False)[0][:, :, :frames]
        out.square().mean().backward()

    return _alternate([
        ("jax forward", lambda: jax_fwd(train).block_until_ready()),
        ("torch forward", torch_fwd),
        ("jax forward+backward", lambda: jax.block_until_ready(jax_bwd(train))),
        ("torch forward+backward", torch_bwd),
    ], args.repeats)


def breakdown(args, cfg, tokens):
    """Times the attention kernels and the dense matmuls of the whole model at these shapes."""
    heads, hd, L, Lt = cfg.num_heads, cfg.head_dim, tokens, args.text_len
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, L, heads, hd)).astype(np.float32) for _ in range(3))
    kt, vt = (rng.standard_normal((1, Lt, heads, hd)).astype(np.float32) for _ in range(2))
    x = rng.standard_normal((L, cfg.dim)).astype(np.float32)
    w = rng.standard_normal((cfg.dim, cfg.dim)).astype(np.float32) / np.float32(np.sqrt(cfg.dim))
    w1 = rng.standard_normal((cfg.dim, cfg.ffn_dim)).astype(np.float32) / np.float32(np.sqrt(cfg.dim))
    w2 = rng.standard_normal((cfg.ffn_dim, cfg.dim)).astype(np.float32) / np.float32(np.sqrt(cfg.ffn_dim))
    layers = cfg.num_layers

    # Each layer's attention reads the previous output and matmuls are chained, so no compiler
    # can deduplicate or skip the timed work.
    @jax.jit
    def j_attn(q, k, v, kt, vt):
        for _ in range(layers):
            q = q + dot_product_attention(q, k, v, backend=cfg.attention, block_q=cfg.flash_block_q,
                                          block_kv=cfg.flash_block_kv)
            q = q + dot_product_attention(q, kt, vt, backend=cfg.attention,
                                          block_q=cfg.flash_block_q, block_kv=cfg.flash_block_kv)
        return q

    @jax.jit
    def j_mm(x, w, w1, w2):  # 6 square projections (self q,k,v,o + cross q,o) and the FFN
        for _ in range(layers):
            for _ in range(6):
                x = x @ w
            x = (x @ w1) @ w2
        return x

    tq, tk, tv, tkt, tvt = (torch.from_numpy(a).transpose(1, 2).contiguous() for a in (q, k, v, kt, vt))
    tx, tw, tw1, tw2 = map(torch.from_numpy, (x, w, w1, w2))

    def t_attn():
        with torch.no_grad():
            y = tq
            for _ in range(layers):
                y = y + F.scaled_dot_product_attention(y, tk, tv)
                y = y + F.scaled_dot_product_attention(y, tkt, tvt)
            return y

    def t_mm():
        with torch.no_grad():
            y = tx
            for _ in range(layers):
                for _ in range(6):
                    y = y @ tw
                y = (y @ tw1) @ tw2
            return y

    jq = [jnp.asarray(a) for a in (q, k, v, kt, vt)]
    jm = [jnp.asarray(a) for a in (x, w, w1, w2)]
    return _alternate([
        ("jax attention", lambda: j_attn(*jq).block_until_ready()),
        ("torch attention", t_attn),
        ("jax matmuls", lambda: j_mm(*jm).block_until_ready()),
        ("torch matmuls", t_mm),
    ], args.repeats)


def add_model_args(parser):
    """The model size and latent shape flags shared by the DiT benchmarks (mid-size defaults)."""
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--text_dim", type=int, default=512)
    parser.add_argument("--text_len", type=int, default=512)
    parser.add_argument("--frames", type=int, default=5, help="latent frames per segment")
    parser.add_argument("--height", type=int, default=32, help="latent height per segment")
    parser.add_argument("--width", type=int, default=56, help="latent width per segment")
    parser.add_argument("--attention", default="auto", help="our backend: auto, xla, flash, cudnn")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--block_q", type=int, default=None, help="flash query tile (config default)")
    parser.add_argument("--block_kv", type=int, default=None, help="flash key/value tile")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cfg, params, peer, lat, cam, cont, text = build(args)
    tokens = 3 * args.frames * (args.height // 2) * (args.width // 2)
    print(f"device: {jax.devices()[0].device_kind} (jax {jax.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads)")
    print(f"config: {args.layers} layers, dim {args.dim}, {cfg.num_heads} heads, ffn {args.ffn}, "
          f"text {args.text_len}x{args.text_dim}; 3 segments of {args.frames}x{args.height}x"
          f"{args.width} latents = {tokens:,} tokens; our attention backend: "
          f"{models.attention.resolve_backend(cfg.attention, cfg.dtype)} "
          f"(tiles {cfg.flash_block_q}x{cfg.flash_block_kv})")
    res = model_timings(args, cfg, params, peer, lat, cam, cont, text)
    res.update(breakdown(args, cfg, tokens))
    print("\n| measurement | jax (s) | torch (s) | jax / torch |\n|---|---|---|---|")
    for what in ("forward", "forward+backward", "attention", "matmuls"):
        j, t = res[f"jax {what}"], res[f"torch {what}"]
        print(f"| {what} | {j:.3f} | {t:.3f} | {j / t:.2f}x |")
    for fw in ("jax", "torch"):
        rest = res[f"{fw} forward"] - res[f"{fw} attention"] - res[f"{fw} matmuls"]
        print(f"{fw} forward: attention {res[f'{fw} attention']:.3f} s, matmuls "
              f"{res[f'{fw} matmuls']:.3f} s, rest {rest:.3f} s")


if __name__ == "__main__":
    main()
