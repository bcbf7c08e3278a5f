"""One CamClone training step, ours vs PyTorch (diffusers Wan), same model, data and device.

  python benchmarks/train_step.py --preset tiny       # CPU, seconds
  python benchmarks/train_step.py --preset mid        # CPU, the docs/performance.md figures
  python benchmarks/train_step.py --preset 1.3b --dtype bfloat16 --attention cudnn   # one GPU

A step is what `camclone_jax.train` runs: three frame-concatenated segments (target, camera
ref, content ref), noise + timestep draw, the flow loss on the target tokens, gradients of the
3D self-attention only, global-norm clipping and an AdamW update of that subset (ours:
train_step.make_train_step jitted with donated state; PyTorch: WanTransformer3DModel with only
`attn1` requiring grad, torch.optim.AdamW, clip_grad_norm_). Times are medians of alternating
runs. Reported: seconds per step, tokens/s, peak memory (GPU: allocator peaks; CPU: XLA's
planned buffers for ours), and MFU from XLA's cost analysis (devices in observe.PEAK_FLOPS, or
--peak_flops) of the step lowered with the layers unrolled, reference attention and no remat
(``model_flops``): a scanned loop body is counted once, a cuDNN call not at all, and remat's
recomputation is not model work.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import _alternate, build  # noqa: E402  (same random model in both frameworks)

from camclone_jax.training import observe, optim  # noqa: E402
from camclone_jax.training import step as step_lib  # noqa: E402
from camclone_jax.models import DiT  # noqa: E402

PRESETS = {  # latent frames/height/width per segment
    "tiny": dict(layers=2, dim=128, head_dim=32, ffn=256, text_dim=64, text_len=16, frames=3,
                 height=8, width=14),
    "mid": dict(layers=4, dim=512, head_dim=64, ffn=2048, text_dim=512, text_len=512, frames=5,
                height=32, width=56),
    "1.3b": dict(layers=30, dim=1536, head_dim=128, ffn=8960, text_dim=4096, text_len=512,
                 frames=21, height=60, width=104),  # 480x832x81: 98,280 tokens
    "paper": dict(layers=30, dim=1536, head_dim=128, ffn=8960, text_dim=4096, text_len=512,
                  frames=20, height=48, width=84),  # 384x672x77
}
RULES = [("self_attn", "train"), (".*", None)]


def our_step(cfg, params, lat, cam, cont, text):
    """Our step jitted with the state donated, and its arguments (state, frozen, batch).

    Arrays give arrays; ``jax.ShapeDtypeStruct`` leaves give abstract arguments (nothing
    allocated), for lowering or FLOP counting at full size without the memory.
    """
    labels = optim.label_params(params, RULES)
    trainable, frozen = step_lib.split_params(params, labels)
    tx = optim.make_optimizer(trainable, RULES, 5e-5)
    init = lambda t: step_lib.init_state(t, tx, 0)  # noqa: E731
    abstract = isinstance(lat, jax.ShapeDtypeStruct)
    state = jax.eval_shape(init, trainable) if abstract else init(trainable)
    step = step_lib.make_train_step(DiT(cfg), tx, step_lib.StepConfig(text_len=text.shape[1]))
    task = jax.ShapeDtypeStruct((1,), jnp.int32) if abstract else np.ones((1,), np.int32)
    batch = {"target": lat, "camera_ref": cam, "content_ref": cont, "task": task,
             "text_embedding": text}
    if not abstract:
        batch = jax.device_put(batch)
    return jax.jit(step, donate_argnums=(0,)), (state, frozen, batch)


def abstract(tree):
    """The ``jax.ShapeDtypeStruct`` of every array leaf."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def model_flops(cfg, params, lat, cam, cont, text) -> float:
    """FLOPs of one step's model work from XLA's cost analysis of the lowered step (nothing
    compiled or allocated): layers unrolled (a scanned body is counted once), reference
    attention (cuDNN calls count zero), no remat (recomputation is not model work)."""
    count = dataclasses.replace(cfg, attention="xla", scan_layers=False, remat="none")
    jitted, args = our_step(count, *abstract((params, lat, cam, cont, text)))
    cost = jitted.lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def planned_bytes(compiled) -> int | None:
    """Device bytes XLA's buffer assignment plans for a compiled step (arguments, outputs and
    temporaries, donated buffers counted once), or None where the backend does not say."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - mem.alias_size_in_bytes)


def ours(args, cfg, params, lat, cam, cont, text):
    """Our jitted step and a runner; returns (run, compiled)."""
    cfg = dataclasses.replace(cfg, dtype=args.dtype, remat=args.remat)
    jitted, (state, frozen, batch) = our_step(cfg, params, lat, cam, cont, text)
    compiled = jitted.lower(state, frozen, batch).compile()
    box = {"state": state}

    def run():
        box["state"], metrics = compiled(box["state"], frozen, batch)
        jax.block_until_ready(metrics["loss"])
    return run, compiled


def theirs(args, peer, lat, cam, cont, text):
    """The same step in PyTorch."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peer = peer.to(device).train()
    trainable = []
    for name, p in peer.named_parameters():
        p.requires_grad_(".attn1." in name)
        if ".attn1." in name:
            trainable.append(p)
    opt = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.0)
    to = lambda a: torch.from_numpy(a).permute(0, 4, 1, 2, 3).contiguous().to(device)
    x0, tcam, tcont = to(lat), to(cam), to(cont)
    ttext = torch.from_numpy(text).to(device)
    frames = lat.shape[1]
    autocast = torch.autocast(device, torch.bfloat16) if args.dtype == "bfloat16" else None
    if args.remat != "none":
        peer.enable_gradient_checkpointing()

    def run():
        t = torch.rand(1, device=device) * 0.998 + 1e-3
        t = 5 * t / (1 + 4 * t)  # shift 5
        z = torch.randn_like(x0)
        xt = (1 - t) * x0 + t * z
        x = torch.cat([xt, tcam, tcont], dim=2)
        if autocast:
            with autocast:
                v = peer(x, t * 1000, ttext, return_dict=False)[0][:, :, :frames]
        else:
            v = peer(x, t * 1000, ttext, return_dict=False)[0][:, :, :frames]
        loss = (v.float() - (z - x0)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mid", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--remat", default="none", choices=["none", "full", "dots", "dots_no_batch"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak_flops", type=float, default=0.0)
    parser.add_argument("--skip_torch", action="store_true")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        setattr(args, key, value)
    args.block_q = args.block_kv = None

    cfg, params, peer, lat, cam, cont, text = build(args)
    tokens = 3 * args.frames * (args.height // 2) * (args.width // 2)
    run_ours, compiled = ours(args, cfg, params, lat, cam, cont, text)
    pairs = [("ours", run_ours)]
    if not args.skip_torch:
        pairs.append(("pytorch", theirs(args, peer, lat, cam, cont, text)))
    dev = jax.devices()[0]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = _alternate(pairs, args.repeats)

    flops = model_flops(dataclasses.replace(cfg, dtype=args.dtype), params, lat, cam, cont, text)
    peak = observe.peak_flops(override=args.peak_flops)
    planned = planned_bytes(compiled)
    stats = dev.memory_stats() or {}
    print(f"device: {dev.device_kind} (jax {jax.__version__}, torch {torch.__version__}); "
          f"preset {args.preset}: {args.layers} layers, dim {args.dim}, {tokens:,} tokens, "
          f"{args.dtype}, remat {args.remat}, attention {args.attention}")
    print(f"| | s/step | tokens/s | peak memory | MFU |")
    print(f"|---|---|---|---|---|")
    ours_mem = stats.get("peak_bytes_in_use", planned)
    m = observe.mfu(flops, times["ours"], peak)
    print(f"| ours | {times['ours']:.4f} | {tokens / times['ours']:,.0f} | "
          f"{(ours_mem or 0) / 2**30:.2f} GiB | {'n/a' if m is None else f'{m:.1%}'} |")
    if "pytorch" in times:
        tmem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        tm = observe.mfu(flops, times["pytorch"], peak)
        print(f"| pytorch | {times['pytorch']:.4f} | {tokens / times['pytorch']:,.0f} | "
              f"{'n/a' if tmem is None else f'{tmem:.2f} GiB'} | "
              f"{'n/a' if tm is None else f'{tm:.1%}'} |")
        print(f"ratio ours/pytorch step time: {times['ours'] / times['pytorch']:.2f}x")
    print(f"XLA FLOPs per step: {flops or 0:.3e}")


if __name__ == "__main__":
    main()
