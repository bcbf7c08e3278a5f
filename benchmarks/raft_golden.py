"""Golden outputs of torchvision's RAFT for the parity tests (tests/eval/test_raft.py).

    /tmp/tvenv/bin/python benchmarks/raft_golden.py            # writes tests/golden/raft_golden_*.npz
    /tmp/tvenv/bin/python benchmarks/raft_golden.py --full     # + full-size parity, printed only

torchvision is not installable beside our torch (CPU 2.13): use a venv that sees the system
packages and holds only the CUDA wheel of torchvision, whose C ops fail to load on CPU:

    python -m venv --system-site-packages /tmp/tvenv
    /tmp/tvenv/bin/pip install --no-deps torchvision==0.28.0

RAFT needs no torchvision C op, but ``import torchvision`` registers fake kernels for ``nms`` /
``qnms`` and fails when they were never declared; they are declared here (never called).

Two tiny RAFTs are built from torchvision's own blocks (FeatureEncoder, ResidualBlock /
BottleneckBlock, CorrBlock, MotionEncoder, RecurrentBlock, FlowHead, UpdateBlock, MaskPredictor)
with the structure of ``raft_small`` and ``raft_large`` but a few channels each and 3 correlation
levels (so a 64x72 pair fits): random init (seed 0), random batch-norm statistics and affine
parameters, eval mode. Each file holds the state dict (``sd/<key>``), the uint8 image pair
[2, 64, 72, 3], the iteration count, our RaftConfig as JSON, the torchvision version and the flow
of every iteration as torchvision returns it ([iters, 1, 2, 64, 72]). ``--full`` also compares
randomly initialised full-size raft_small() / raft_large() (12 iterations, 128x160) with
our port and prints the max abs difference (pretrained weights need a download).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import torchvision  # noqa: E402
from torchvision.models.optical_flow import raft as tvr  # noqa: E402

from camclone_jax.eval.networks.raft import RaftConfig  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden")
TINY = {
    "small": RaftConfig.small(
        feature_layers=(8, 8, 8, 12, 12), context_layers=(8, 8, 8, 12, 16), corr_levels=3,
        corr_radius=3, motion_corr_layers=(10,), motion_flow_layers=(6, 4), motion_out=8,
        hidden=8, flow_head_hidden=12),
    "large": RaftConfig.large(
        feature_layers=(6, 6, 8, 10, 12), context_layers=(6, 6, 8, 10, 16), corr_levels=3,
        corr_radius=3, motion_corr_layers=(12, 8), motion_flow_layers=(6, 4), motion_out=10,
        hidden=8, flow_head_hidden=12, mask_hidden=8),
}
ITERS = {"small": 4, "large": 3}
HEIGHT, WIDTH = 64, 72  # features 8x9: odd, so pooling floors 9 -> 4 -> 2

_BLOCKS = {"residual": tvr.ResidualBlock, "bottleneck": tvr.BottleneckBlock}
_NORMS = {"instance": torch.nn.InstanceNorm2d, "batch": torch.nn.BatchNorm2d, "none": None}


def torchvision_raft(cfg: RaftConfig) -> torch.nn.Module:
    """A torchvision RAFT with the sizes of ``cfg`` (raft_large / raft_small's own wiring)."""
    feature = tvr.FeatureEncoder(block=_BLOCKS[cfg.feature_block], layers=cfg.feature_layers,
                                 norm_layer=_NORMS[cfg.feature_norm])
    context = tvr.FeatureEncoder(block=_BLOCKS[cfg.context_block], layers=cfg.context_layers,
                                 norm_layer=_NORMS[cfg.context_norm])
    corr = tvr.CorrBlock(num_levels=cfg.corr_levels, radius=cfg.corr_radius)
    motion = tvr.MotionEncoder(in_channels_corr=corr.out_channels, corr_layers=cfg.motion_corr_layers,
                               flow_layers=cfg.motion_flow_layers, out_channels=cfg.motion_out)
    kernels = tuple(tuple(k) for k in cfg.gru_kernels)
    recurrent = tvr.RecurrentBlock(
        input_size=motion.out_channels + cfg.context_layers[-1] - cfg.hidden,
        hidden_size=cfg.hidden, kernel_size=kernels,
        padding=tuple((kh // 2, kw // 2) for kh, kw in kernels))
    update = tvr.UpdateBlock(motion_encoder=motion, recurrent_block=recurrent,
                             flow_head=tvr.FlowHead(in_channels=cfg.hidden,
                                                    hidden_size=cfg.flow_head_hidden))
    mask = None if cfg.mask_hidden is None else tvr.MaskPredictor(
        in_channels=cfg.hidden, hidden_size=cfg.mask_hidden, multiplier=cfg.mask_multiplier)
    return tvr.RAFT(feature_encoder=feature, context_encoder=context, corr_block=corr,
                    update_block=update, mask_predictor=mask)


def randomize_batch_norms(model: torch.nn.Module, gen: torch.Generator):
    """Random running statistics and affine parameters for every BatchNorm2d; eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(c, generator=gen))
    return model.eval()


def image_pair(height, width, seed=0):
    """uint8 [2, height, width, 3]: a smooth random texture and the same shifted by (3, 2) px."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None],
                                          scale_factor=8, mode="bilinear", align_corners=False)
    big = big[0].permute(1, 2, 0).numpy()  # [(h/8+2)*8, (w/8+2)*8, 3]
    noise = rng.normal(0, 8, big.shape)
    big = np.clip(big + noise, 0, 255).astype(np.uint8)
    return np.stack([big[8:8 + height, 8:8 + width], big[6:6 + height, 5:5 + width]])


def run_torch(model, images, iters):
    """Flow of every iteration [iters, b, 2, H, W] for uint8 images [2, H, W, 3] (batch 1)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # [2, 3, H, W]
    x = (x / 255.0 - 0.5) / 0.5  # torchvision's OpticalFlow transform: [-1, 1]
    with torch.no_grad():
        flows = model(x[:1], x[1:], num_flow_updates=iters)
    return torch.stack(flows).numpy()


def run_ours(cfg, state, images, iters):
    """Our port's flow of every iteration, in torchvision's layout [iters, b, 2, H, W]."""
    import jax
    from camclone_jax.convert.raft import raft_params_from_torch
    from camclone_jax.eval.networks import raft

    params = raft_params_from_torch(state, cfg)
    x = raft.normalize(images)  # [2, H, W, 3]
    fn = jax.jit(lambda p, a, b: raft.RAFT(cfg).apply({"params": p}, a, b, iters))
    return np.asarray(fn(params, x[:1], x[1:])).transpose(0, 1, 4, 2, 3)


def write_golden(size: str):
    cfg = TINY[size]
    torch.manual_seed(0)
    model = randomize_batch_norms(torchvision_raft(cfg), torch.Generator().manual_seed(1))
    images = image_pair(HEIGHT, WIDTH)
    flows = run_torch(model, images, ITERS[size])
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    path = os.path.join(OUT_DIR, f"raft_golden_{size}.npz")
    np.savez_compressed(
        path, images=images, flows=flows.astype(np.float32), iters=np.int64(ITERS[size]),
        config=json.dumps(dataclasses.asdict(cfg)), torchvision=torchvision.__version__,
        torch=torch.__version__, **{f"sd/{k}": v for k, v in state.items()})
    ours = run_ours(cfg, state, images, ITERS[size])
    err = np.abs(ours - flows).max(axis=(1, 2, 3, 4))
    print(f"tiny {size}: {sum(v.size for v in state.values())} params, "
          f"{os.path.getsize(path) / 1024:.0f} KB -> {path}; flow |max| per iter "
          f"{np.abs(flows).max(axis=(1, 2, 3, 4)).round(3).tolist()}, max abs diff ours vs "
          f"torchvision per iter {err.tolist()}")


def check_full(size: str, iters=12, height=128, width=160):
    """Randomly initialised full-size torchvision model vs ours (printed, not stored)."""
    torch.manual_seed(0)
    model = tvr.raft_large() if size == "large" else tvr.raft_small()
    model = randomize_batch_norms(model, torch.Generator().manual_seed(1))
    images = image_pair(height, width)
    flows = run_torch(model, images, iters)
    cfg = RaftConfig.large() if size == "large" else RaftConfig.small()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ours = run_ours(cfg, state, images, iters)
    err = np.abs(ours - flows).max(axis=(1, 2, 3, 4))
    print(f"full raft_{size} ({sum(p.numel() for p in model.parameters())} params, {height}x"
          f"{width}, {iters} iters): flow |max| {np.abs(flows).max():.3f}; max abs diff per "
          f"iter {np.array2string(err, precision=2)}; last {err[-1]:.2e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="also check full-size raft_small/large")
    args = p.parse_args()
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}")
    for size in ("small", "large"):
        write_golden(size)
    if args.full:
        for size in ("small", "large"):
            check_full(size)


if __name__ == "__main__":
    main()
