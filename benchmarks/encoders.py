"""umT5 text encoder and CLIP vision tower: JAX (this port) against transformers on the same CPU.

    python benchmarks/encoders.py                          # defaults below
    python benchmarks/encoders.py --t5-layers 4 --t5-dim 512 --t5-heads 8 --t5-ffn 1024 \\
        --tokens 512 --batch 2 --runs 5 --no-clip

Both sides get the same random weights (transformers initialisation, imported with
``t5_params_from_torch`` / ``clip_params_from_torch``) and the same inputs: for umT5, token ids
with a padding mask (half of the second prompt padded); for CLIP, random 224x224 pixels
(penultimate layer). Runs alternate JAX / PyTorch so that load from other processes hits both
alike; the table shows median seconds, the ratio JAX / PyTorch and the max abs difference on the
valid rows. JAX compile time is reported apart. float32 on both sides.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from camclone_jax.convert.encoders import clip_params_from_torch, t5_params_from_torch  # noqa: E402
from camclone_jax.models import clip, t5  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _alternate(jax_fn, torch_fn, runs: int):
    """Median seconds of both, alternating, after one warm-up each (JAX's includes compile)."""
    compile_s, _ = _timed(jax_fn)
    torch_fn()
    tj, tt = [], []
    for _ in range(runs):
        tj.append(_timed(jax_fn)[0])
        tt.append(_timed(torch_fn)[0])
    return statistics.median(tj), statistics.median(tt), compile_s


def bench_t5(args):
    """umT5 encoder at the configured size: (row of the table)."""
    import torch
    import transformers

    torch.manual_seed(args.seed)
    hf = transformers.UMT5Config(vocab_size=args.vocab, d_model=args.t5_dim, num_heads=args.t5_heads,
                                 d_kv=args.t5_dim // args.t5_heads, d_ff=args.t5_ffn,
                                 num_layers=args.t5_layers, dropout_rate=0.0)
    model = transformers.UMT5EncoderModel(hf).eval()
    cfg = t5.T5Config.from_transformers(hf.to_dict())
    params = jax.device_put(t5_params_from_torch(
        {k: v.numpy() for k, v in model.state_dict().items()}, cfg, "transformers"))
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(2, args.vocab, (args.batch, args.tokens))
    mask = np.ones_like(ids)
    mask[-1, args.tokens // 2:] = 0
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)

    def run_jax():
        return jax.block_until_ready(t5.encode_ids(cfg, params, ids, mask))

    def run_torch():
        with torch.inference_mode():
            return model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    tj, tt, comp = _alternate(run_jax, run_torch, args.runs)
    valid = mask.astype(bool)
    diff = np.abs(np.asarray(run_jax())[valid] - run_torch().numpy()[valid]).max()
    name = (f"umT5 L{args.t5_layers} d{args.t5_dim} h{args.t5_heads} ff{args.t5_ffn}, "
            f"{args.batch}x{args.tokens} tokens")
    return name, tj, tt, comp, diff


def bench_clip(args):
    """CLIP vision tower (penultimate layer) at the configured size."""
    import torch
    import transformers

    torch.manual_seed(args.seed)
    hf = transformers.CLIPVisionConfig(hidden_size=args.clip_dim, intermediate_size=4 * args.clip_dim,
                                       num_hidden_layers=args.clip_layers,
                                       num_attention_heads=args.clip_dim // 80, image_size=224,
                                       patch_size=14, hidden_act="gelu")
    model = transformers.CLIPVisionModel(hf).eval()
    cfg = clip.CLIPVisionConfig.from_transformers(hf.to_dict())
    params = jax.device_put(clip_params_from_torch(
        {k: v.numpy() for k, v in model.state_dict().items()}, cfg, "transformers"))
    pixels = np.random.default_rng(args.seed).normal(size=(args.batch, 224, 224, 3)).astype(np.float32)
    pixels_t = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()

    def run_jax():
        return jax.block_until_ready(clip.encode_images(cfg, params, pixels))

    def run_torch():
        with torch.inference_mode():
            return model(pixel_values=pixels_t, output_hidden_states=True).hidden_states[-2]

    tj, tt, comp = _alternate(run_jax, run_torch, args.runs)
    diff = np.abs(np.asarray(run_jax()) - run_torch().numpy()).max()
    name = f"CLIP L{args.clip_layers} d{args.clip_dim}, {args.batch}x257 tokens"
    return name, tj, tt, comp, diff


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t5-layers", type=int, default=4)
    parser.add_argument("--t5-dim", type=int, default=512)
    parser.add_argument("--t5-heads", type=int, default=8)
    parser.add_argument("--t5-ffn", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--clip-layers", type=int, default=4)
    parser.add_argument("--clip-dim", type=int, default=320)
    parser.add_argument("--no-clip", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    import torch

    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
    rows = [bench_t5(args)] + ([] if args.no_clip else [bench_clip(args)])
    print(f"{'model':<48} {'jax s':>8} {'torch s':>8} {'ratio':>6} {'compile s':>9} {'max diff':>9}")
    for name, tj, tt, comp, diff in rows:
        print(f"{name:<48} {tj:8.3f} {tt:8.3f} {tj / tt:6.2f} {comp:9.2f} {diff:9.1e}")


if __name__ == "__main__":
    main()
