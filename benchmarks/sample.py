"""Sampling: seconds per denoising step and peak memory, ours against a diffusers-style loop.

  python benchmarks/sample.py                          # tiny and mid on CPU (docs/performance.md figures)
  python benchmarks/sample.py --configs tiny --steps 2 # quick check
  python benchmarks/sample.py --configs 1.3b           # Wan 2.1 1.3B at 480x832x81 (GPU)
  python benchmarks/sample.py --configs 1.3b --pipeline   # + a whole 480x832x81 sample's peak
  python benchmarks/sample.py --analyze 1.3b           # compiled memory of the 1.3B loop, no run

Both sides denoise the same CamClone-shaped problem with random weights of the same size:
target, camera-reference and content-reference latents joined along the frame axis (3 x the
target's tokens), text of ``text_len`` tokens, classifier-free guidance, flow-matching Euler
with shift 5.
  ours   ``camclone_jax.inference.denoise.denoise``: the whole loop one jitted ``lax.fori_loop``, the
         cond/uncond pair batched into one DiT call per step.
  torch  diffusers ``WanTransformer3DModel`` + ``FlowMatchEulerDiscreteScheduler`` stepped the
         way ``WanPipeline`` does it: two transformer calls per step (cond, then uncond) on the
         frame-concatenated input, the target frames sliced from the output, CFG, a
         scheduler step; ``torch.no_grad``.
Each side runs in its own process (so its peak memory is its own): a warm-up loop (JAX:
compilation), then a timed loop of ``--steps`` steps; seconds per step = timed loop / steps.
Peak memory is the device allocator's peak on GPU (``memory_stats`` / ``max_memory_allocated``)
and the process's peak RSS on CPU. Float32 on CPU, bfloat16 weights and compute on GPU.

Ours batches the cond/uncond pair (``--sequential_cfg`` in the CLI runs them as two calls).
``--pipeline`` also runs ``CamClonePipeline.generate`` once end to end (random Wan 2.1 VAE,
tiled decode; reference videos from random frames) and reports its peak memory: what a
480x832x81 sample needs. ``--analyze`` compiles the sampling loop for a config from shapes
alone (nothing allocated, nothing run) and prints XLA's buffer assignment (arguments, outputs,
temporaries): a device-independent estimate where no accelerator is at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = {
    # dim, ffn, layers, head_dim, text (len x dim), video frames x height x width
    "tiny": dict(dim=64, ffn=128, layers=2, head_dim=32, text_len=16, text_dim=32,
                 frames=5, height=32, width=48),
    "mid": dict(dim=512, ffn=2048, layers=4, head_dim=64, text_len=512, text_dim=512,
                frames=17, height=256, width=448),
    "1.3b": dict(dim=1536, ffn=8960, layers=30, head_dim=128, text_len=512, text_dim=4096,
                 frames=81, height=480, width=832),
}
CHANNELS, SHIFT, CFG_SCALE = 16, 5.0, 5.0


def latent_shape(c: dict) -> tuple[int, int, int, int, int]:
    """Wan VAE latents of one segment: 4x temporal, 8x spatial, 16 channels."""
    return (1, 1 + (c["frames"] - 1) // 4, c["height"] // 8, c["width"] // 8, CHANNELS)


def tokens(c: dict) -> int:
    _, f, h, w, _ = latent_shape(c)
    return 3 * f * (h // 2) * (w // 2)


def _peak(on_gpu: bool, jax_side: bool) -> float:
    """Peak bytes: the device allocator's on GPU, else the process's RSS."""
    if on_gpu and jax_side:
        import jax

        return max((d.memory_stats() or {}).get("peak_bytes_in_use", 0)
                   for d in jax.local_devices())
    if on_gpu:
        import torch

        return float(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


# ------------------------------------------------------------------------------------ workers
def _dit_config(c: dict, dtype: str, attention: str = "auto"):
    from camclone_jax.models import DiTConfig

    return DiTConfig(dim=c["dim"], ffn_dim=c["ffn"], num_layers=c["layers"],
                     num_heads=c["dim"] // c["head_dim"], in_channels=CHANNELS,
                     out_channels=CHANNELS, text_dim=c["text_dim"], dtype=dtype,
                     param_dtype=dtype, attention=attention)


def random_params(cfg, dtype: str, rng):
    """Random DiT params (normal, std 0.02) drawn on the host: no init program to compile."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from camclone_jax.models import param_shapes

    return jax.tree_util.tree_map(
        lambda s: jnp.asarray((0.02 * rng.standard_normal(s.shape)).astype(np.float32), dtype),
        param_shapes(cfg))


def _jax_problem(c: dict, steps: int, dtype: str, shapes_only: bool = False,
                 attention: str = "auto"):
    """(config, params, cond, noise, tables) of our loop; ShapeDtypeStructs if shapes_only."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from camclone_jax.diffusion import sampler
    from camclone_jax.models import param_shapes

    cfg = _dit_config(c, dtype, attention)
    shape = latent_shape(c)
    text = (1, c["text_len"], c["text_dim"])
    tables = sampler.solver_tables(sampler.make_schedule(steps, SHIFT), "euler")
    specs = {"text": text, "neg_text": text, "cam": shape, "content": shape}
    shapes = param_shapes(cfg)
    if shapes_only:
        sds = lambda s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
        params = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes)
        cond = {k: sds(v) for k, v in specs.items()}
        tables = {k: sds(v.shape) for k, v in tables.items()}
        return cfg, params, cond, sds(shape), tables
    rng = np.random.default_rng(0)
    params = random_params(cfg, dtype, rng)
    cond = {k: jnp.asarray(rng.standard_normal(v).astype(np.float32)) for k, v in specs.items()}
    noise = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    return cfg, params, cond, noise, {k: jnp.asarray(v) for k, v in tables.items()}


def jax_worker(c: dict, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from camclone_jax.inference import denoise

    on_gpu = jax.default_backend() == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    cfg, params, cond, noise, tables = _jax_problem(c, steps, dtype)

    def run():
        return jax.block_until_ready(denoise.denoise(
            params, cond, noise, tables, jnp.float32(CFG_SCALE), None, cfg=cfg, solver="euler",
            order=2, guided=True))

    t0 = time.perf_counter()
    run()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    loop = time.perf_counter() - t0
    return {"s_per_step": loop / steps, "warmup_s": warm, "peak_bytes": _peak(on_gpu, True),
            "device": jax.devices()[0].device_kind}


def torch_worker(c: dict, steps: int) -> dict:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    on_gpu = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=c["dim"] // c["head_dim"],
        attention_head_dim=c["head_dim"], in_channels=CHANNELS, out_channels=CHANNELS,
        text_dim=c["text_dim"], freq_dim=256, ffn_dim=c["ffn"], num_layers=c["layers"],
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6).to(device, dtype).eval()
    _, f, h, w, ch = latent_shape(c)
    gen = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=gen).to(device)  # noqa: E731
    cam, content = rand(1, ch, f, h, w).to(dtype), rand(1, ch, f, h, w).to(dtype)
    text, neg = (rand(1, c["text_len"], c["text_dim"]).to(dtype) for _ in range(2))
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SHIFT)

    @torch.no_grad()
    def run(n):
        sched.set_timesteps(n, device=device)
        latents = rand(1, ch, f, h, w)  # float32, as WanPipeline keeps them
        for t in sched.timesteps:
            x = torch.cat([latents.to(dtype), cam, content], dim=2)  # frame concat
            ts = t.expand(1)
            v_c = model(x, ts, text, return_dict=False)[0][:, :, :f].float()
            v_u = model(x, ts, neg, return_dict=False)[0][:, :, :f].float()
            latents = sched.step(v_u + CFG_SCALE * (v_c - v_u), t, latents, return_dict=False)[0]
        if on_gpu:
            torch.cuda.synchronize()
        return latents

    t0 = time.perf_counter()
    run(1)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(steps)
    loop = time.perf_counter() - t0
    return {"s_per_step": loop / steps, "warmup_s": warm, "peak_bytes": _peak(on_gpu, False),
            "device": torch.cuda.get_device_name() if on_gpu else "cpu",
            "threads": torch.get_num_threads()}


def pipeline_worker(c: dict, steps: int, batched: bool = True) -> dict:
    """One whole ``generate`` (encode references, denoise, tiled VAE decode) with random weights;
    the CFG pair batched or as two calls (``--sequential_cfg``). ``c["vae"]``, if given,
    overrides fields of the Wan 2.1 VAE config (a smaller VAE for quick checks)."""
    import jax
    import numpy as np

    from camclone_jax import inference
    from camclone_jax.models.vae import WanVAE, WanVAEConfig

    on_gpu = jax.default_backend() == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    cfg, params, _, _, _ = _jax_problem(c, 1, dtype)

    class RandomText(inference.TextSource):
        def embed(self, prompts):
            return np.random.default_rng(0).standard_normal(
                (len(prompts), c["text_len"], c["text_dim"])).astype(np.float32)

    vae_cfg = WanVAEConfig(tiling=True, **c.get("vae", {}))
    codec = inference.VAECodec(vae_cfg, WanVAE(vae_cfg).init_params(jax.random.key(0)))
    pipe = inference.CamClonePipeline(cfg, params, codec, RandomText(), dtype=dtype)
    del params
    video = np.random.default_rng(1).integers(0, 256, (c["frames"], c["height"], c["width"], 3),
                                              dtype=np.uint8)
    t0 = time.perf_counter()
    result = pipe.generate(video, "a prompt", content_ref=video, frames=c["frames"],
                           height=c["height"], width=c["width"], steps=steps, progress=False,
                           cfg_batched=batched)
    return {"seconds": time.perf_counter() - t0, "stages": result.seconds, "steps": steps,
            "cfg_batched": batched,
            "peak_bytes": _peak(on_gpu, True) if on_gpu else result.peak_memory["host"],
            "device": jax.devices()[0].device_kind}


def analyze(c: dict, steps: int) -> dict:
    """Compiles our loop from shapes only and returns XLA's memory analysis (bytes)."""
    import jax
    import jax.numpy as jnp

    from camclone_jax.inference import denoise

    cfg, params, cond, noise, tables = _jax_problem(c, steps, "bfloat16", shapes_only=True)
    out = {"backend": jax.default_backend()}
    for batched in (True, False):
        t0 = time.perf_counter()
        m = denoise.denoise.lower(params, cond, noise, tables,
                                     jax.ShapeDtypeStruct((), jnp.float32), None, cfg=cfg,
                                     solver="euler", order=2, guided=True,
                                     batched=batched).compile().memory_analysis()
        key = "batched" if batched else "sequential"
        out[key] = {"compile_s": time.perf_counter() - t0,
                    "argument_bytes": m.argument_size_in_bytes,
                    "output_bytes": m.output_size_in_bytes, "temp_bytes": m.temp_size_in_bytes,
                    "total_bytes": (m.argument_size_in_bytes + m.output_size_in_bytes
                                    + m.temp_size_in_bytes)}
    return out


WORKERS = {"jax": jax_worker, "torch": torch_worker, "pipeline": pipeline_worker,
           "analyze": analyze}


# ----------------------------------------------------------------------------------- driver
def _spawn(kind: str, config: str, steps: int) -> dict:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--configs", config,
                           "--steps", str(steps)], capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} worker for {config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _gib(b) -> str:
    return f"{b / 2**30:.2f} GiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=None,
                        help="comma-separated of tiny, mid, 1.3b (default: tiny,mid; plus 1.3b "
                        "on a GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 tiny, "
                        "3 otherwise)")
    parser.add_argument("--pipeline", action="store_true", help="also one whole generate()")
    parser.add_argument("--analyze", help="compile-only memory analysis of this config")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        c = CONFIGS[args.configs]
        print(json.dumps(WORKERS[args.worker](c, args.steps)))
        return
    if args.analyze:
        res = _spawn("analyze", args.analyze, args.steps or 50)
        print(f"{args.analyze}: {tokens(CONFIGS[args.analyze]):,} tokens, bfloat16 weights, "
              f"XLA {res['backend']} buffer assignment of the {args.steps or 50}-step loop")
        for mode in ("batched", "sequential"):
            r = res[mode]
            print(f"  CFG {mode}: arguments {_gib(r['argument_bytes'])}, outputs "
                  f"{_gib(r['output_bytes'])}, temporaries {_gib(r['temp_bytes'])}, total "
                  f"{_gib(r['total_bytes'])} (compiled in {r['compile_s']:.0f} s)")
        return
    import jax

    on_gpu = jax.default_backend() == "gpu"
    names = (args.configs or ("tiny,mid,1.3b" if on_gpu else "tiny,mid")).split(",")
    rows = []
    for name in names:
        c, steps = CONFIGS[name], args.steps or (10 if name == "tiny" else 3)
        ours, peer = _spawn("jax", name, steps), _spawn("torch", name, steps)
        rows.append((name, c, steps, ours, peer))
        print(f"{name}: ours {ours['s_per_step']:.4f} s/step (warm-up {ours['warmup_s']:.1f} s), "
              f"torch {peer['s_per_step']:.4f} s/step", flush=True)
    print(f"\ndevice: {rows[0][3]['device']}; CFG {CFG_SCALE}, Euler, shift {SHIFT}; "
          f"{'bfloat16' if on_gpu else 'float32'}\n")
    print("| config | video | tokens (3 segments) | steps | ours s/step | diffusers-style s/step "
          "| ours / torch | ours peak | torch peak |\n|---|---|---|---|---|---|---|---|---|")
    for name, c, steps, ours, peer in rows:
        print(f"| {name} | {c['frames']}x{c['height']}x{c['width']} | {tokens(c):,} | {steps} | "
              f"{ours['s_per_step']:.4f} | {peer['s_per_step']:.4f} | "
              f"{ours['s_per_step'] / peer['s_per_step']:.2f}x | {_gib(ours['peak_bytes'])} | "
              f"{_gib(peer['peak_bytes'])} |")
    if args.pipeline:
        for name in names:
            res = _spawn("pipeline", name, args.steps or 2)
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in res["stages"].items())
            print(f"\n{name} whole sample ({res['device']}): {res['seconds']:.1f} s ({stages}); "
                  f"peak memory {_gib(res['peak_bytes'])}")


if __name__ == "__main__":
    main()
