"""Wan 2.1 VAE: JAX (this port) against diffusers ``AutoencoderKLWan`` on the same CPU.

    python benchmarks/vae.py                       # Wan 2.1 architecture, 9 x 64 x 64 video
    python benchmarks/vae.py --base-dim 32 --size 128 --runs 5

Both sides get the same random weights (diffusers initialisation, imported with
``vae_params_from_diffusers``) and the same video; they encode (posterior mean) and decode that
mean. Runs alternate JAX / PyTorch so that load from other processes hits both alike; the table
shows the median seconds, the ratio JAX / PyTorch and the max abs difference of the outputs.
JAX compile time is reported apart.

Memory: the XLA buffer assignment of the compiled encoder (``memory_analysis``: temporaries;
arguments and outputs apart) for 9 and 33 frames, chunked (``lax.scan`` over 4-frame chunks with
the causal cache) and whole-video, with 3D convolutions split into time-tap 2D ones (the CPU
default, faster) and native. The chunked temporaries should not grow with the frame count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from camclone_jax.convert.vae import vae_config_from_diffusers, vae_params_from_diffusers  # noqa: E402
from camclone_jax.models import vae as vae_lib  # noqa: E402
from camclone_jax.models import vae_layers  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _torch_vae(base_dim: int, seed: int):
    import diffusers
    import torch
    torch.manual_seed(seed)
    return diffusers.AutoencoderKLWan(base_dim=base_dim).eval()


def speed(args) -> list[tuple]:
    """Median encode/decode seconds of both implementations, alternating, plus parity."""
    import torch
    model = _torch_vae(args.base_dim, args.seed)
    config = vae_config_from_diffusers(dict(model.config))
    params = jax.device_put(vae_params_from_diffusers(
        {k: v.numpy() for k, v in model.state_dict().items()}, config))
    vae = vae_lib.WanVAE(config)
    video = np.random.RandomState(args.seed).uniform(
        -1, 1, (1, args.frames, args.size, args.size, 3)).astype(np.float32)
    video_t = torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()

    def jax_encode():
        mean, _ = vae.encode_moments(params, video)
        return np.asarray(mean)

    def torch_encode():
        with torch.no_grad():
            return model.encode(video_t).latent_dist.mean

    mean_t = torch_encode()
    mean_np = mean_t.permute(0, 2, 3, 4, 1).numpy()

    def jax_decode():
        return np.asarray(vae.decode_unnormalized(params, mean_np))

    def torch_decode():
        with torch.no_grad():
            return model.decode(mean_t).sample

    compile_enc, _ = _timed(jax_encode)
    compile_dec, _ = _timed(jax_decode)
    times = {k: [] for k in ("jax_enc", "torch_enc", "jax_dec", "torch_dec")}
    for _ in range(args.runs):
        for name, fn in (("jax_enc", jax_encode), ("torch_enc", torch_encode),
                         ("jax_dec", jax_decode), ("torch_dec", torch_decode)):
            seconds, out = _timed(fn)
            times[name].append(seconds)
            if name == "jax_enc":
                enc_diff = float(np.abs(out - mean_np).max())
            if name == "jax_dec":
                dec_diff = float(np.abs(out - torch_decode().permute(0, 2, 3, 4, 1).numpy()).max())
    med = {k: statistics.median(v) for k, v in times.items()}
    return [
        ("encode", compile_enc - med["jax_enc"], med["jax_enc"], med["torch_enc"], enc_diff),
        ("decode", compile_dec - med["jax_dec"], med["jax_dec"], med["torch_dec"], dec_diff),
    ]


def memory(args) -> list[tuple]:
    """XLA buffer sizes (MiB) of the compiled encoder for 9 and 33 frames: chunked and whole,
    with 3D convolutions split into 2D ones (the CPU default) and with the native 3D op."""
    config = vae_lib.WanVAEConfig(base_dim=args.base_dim)
    params = vae_lib.WanVAE(config).param_shapes()
    rows = []
    for split in (True, False):
        vae_layers.SPLIT_CONV3D_ON_CPU = split
        jax.clear_caches()  # the switch is read at trace time
        for chunked in (True, False):
            for frames in (9, 33):
                video = jax.ShapeDtypeStruct((1, frames, args.size, args.size, 3), jnp.float32)
                compiled = vae_lib._encode_moments.lower(
                    params, video, config=config, chunked=chunked, tiles=None).compile()
                mem = compiled.memory_analysis()
                mib = 1 / 2 ** 20
                rows.append(("chunked" if chunked else "whole", "split 2D" if split else "native 3D",
                             frames, mem.temp_size_in_bytes * mib, mem.argument_size_in_bytes * mib,
                             mem.output_size_in_bytes * mib))
    vae_layers.SPLIT_CONV3D_ON_CPU = True
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-dim", type=int, default=96, help="96 is Wan 2.1")
    parser.add_argument("--size", type=int, default=64, help="square frame size in pixels")
    parser.add_argument("--frames", type=int, default=9, help="1 + 4k frames for the timing")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    print(f"# Wan 2.1 VAE, base_dim {args.base_dim}, video 1x{args.frames}x{args.size}x{args.size}, "
          f"float32, CPU ({os.cpu_count()} cores; torch threads {torch.get_num_threads()}), "
          f"jax {jax.__version__}, torch {torch.__version__}, median of {args.runs} alternating runs\n")
    print("| step | JAX compile s | JAX s | diffusers s | JAX / diffusers | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name, comp, tj, tt, diff in speed(args):
        print(f"| {name} | {comp:.1f} | {tj:.3f} | {tt:.3f} | {tj / tt:.2f} | {diff:.1e} |")
    print(f"\n# Encoder memory (XLA buffer assignment, MiB), frames {args.size}x{args.size}\n")
    print("| path | conv3d | frames | temporaries | arguments (params + video) | output |")
    print("|---|---|---|---|---|---|")
    for path, conv, frames, temp, arg, out in memory(args):
        print(f"| {path} | {conv} | {frames} | {temp:.1f} | {arg:.1f} | {out:.2f} |")


if __name__ == "__main__":
    main()
