"""Can a network of the DiT's size read the camera from a camera reference's latents at all?
A supervised probe: a transformer as wide and deep as the clone model regresses each latent
frame's image motion relative to the first (where 9 points of the first frame went, from the
true poses and intrinsics) from the camera reference latents alone, trained on the training
records and scored on held-out ones.

  python benchmarks/camera_readout.py \
      --train DATA/train/latents-... --val DATA/val/latents-... [--steps 2000] [--cell 4] \
      [--dim 128 --layers 4] [--cache DIR] [--out F.json]

It separates the two halves of camera cloning: reading the reference (this probe, with the
answer given as supervision) and learning to read it from the generative loss alone (what
configs/clone_3d.py asks). The error is the distance between the predicted and the true
positions of a 3 x 3 grid of first-frame points in latent frames 1.. (pixels, mean over
points, frames and clips): for a rotating camera that image motion is what a reference and its
target share exactly (same trajectory, same lens). The rows compare it with predicting no
motion (a static camera) and the training set's mean motion.
A probe that reads the held-out references well while the clone model does not says the
generative signal is what is missing; one that reads them poorly says the tokens or the
network's size are (``--cell`` re-cuts the pixel-codec latents into smaller tokens, ``--dim``
and ``--layers`` resize the network). Bad folders exit with status 2 and a one-line error.
"""
import argparse
import json
import os
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from einops import rearrange

from camclone_jax import errors
from camclone_jax.data import records
from camclone_jax.data.pipeline import record_files
from camclone_jax.data.synthetic.trajectories import intrinsics_matrix
from camclone_jax.utils import atomic_file, write_atomic


def grid_motion(poses: np.ndarray, intrinsics: np.ndarray, stride: int, frames: int,
                height: int, width: int) -> np.ndarray:
    """poses [F, 4, 4] camera-to-world, intrinsics [F, 4] normalised (fx, fy, cx, cy) ->
    [frames - 1, 9, 2] pixel displacements of a 3 x 3 grid of first-frame points in latent
    frames 1.. (a pure rotation: x_k ~ K_k R_k^T R_0 K_0^-1 x_0)."""
    k = intrinsics_matrix(intrinsics, height, width)  # [F, 3, 3]
    gx, gy = np.meshgrid(np.array([1, 3, 5]) * width / 6, np.array([1, 3, 5]) * height / 6)
    x0 = np.stack([gx.ravel(), gy.ravel(), np.ones(9)])  # [3, 9]
    rays = poses[0, :3, :3] @ np.linalg.inv(k[0]) @ x0  # world, [3, 9]
    out = []
    for i in range(1, frames):
        xk = k[i * stride] @ poses[i * stride, :3, :3].T @ rays  # [3, 9]
        out.append((xk[:2] / xk[2:] - x0[:2]).T)  # [9, 2]
    return np.stack(out).astype(np.float32)


def retile(latents: np.ndarray, cell: int, new_cell: int) -> np.ndarray:
    """Pixel-codec latents [n, f, h, w, cell * cell * 3] (space-to-depth) re-cut into cells of
    ``new_cell`` pixels: the same pixels, other tokens."""
    pixels = rearrange(latents, "n f h w (p q c) -> n f (h p) (w q) c", p=cell, q=cell)
    return rearrange(pixels, "n f (h p) (w q) c -> n f h w (p q c)", p=new_cell, q=new_cell)


def load_split(path: str, limit: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The camera references of a latent record folder: latents [n, f, h, w, c] (float16) and
    their image motion [n, f - 1, 9, 2] (pixels, ``grid_motion``)."""
    lat, motion = [], []
    for file in record_files(path):
        for data in records.read_records(file):
            record = records.decode_triplet(data)
            if record["kind"] != "latent":
                raise errors.UserError(f"{file}: {record['kind']} records; the probe reads "
                                       "pre-encoded latent records (DATA/SPLIT/latents-...)")
            ref = record["camera_ref"]
            if "poses" not in ref or "intrinsics" not in ref:
                raise errors.UserError(f"{file}: camera references without poses or "
                                       "intrinsics")
            x = np.asarray(ref["latents"], np.float16)  # [f, h, w, c]
            lat.append(x)
            motion.append(grid_motion(np.asarray(ref["poses"]), np.asarray(ref["intrinsics"]),
                                   stride, x.shape[0], record["height"], record["width"]))
            if len(lat) >= limit:
                return np.stack(lat), np.stack(motion)
    return np.stack(lat), np.stack(motion)


def cached(folder: str, fn, path: str, limit: int, stride: int):
    """``fn(path, limit, stride)``, kept in ``folder`` as an .npz named after its arguments
    (decoding 24,000 records takes minutes; nothing is kept when ``folder`` is empty)."""
    if not folder:
        return fn(path, limit, stride)
    key = f"{os.path.abspath(path)}|{limit}|{stride}".encode()
    file = os.path.join(folder, f"readout-{zlib.crc32(key):08x}.npz")
    if os.path.exists(file):
        with np.load(file) as data:
            return data["latents"], data["motion"]
    latents, motion = fn(path, limit, stride)
    with atomic_file(file) as tmp, open(tmp, "wb") as f:  # whole or absent
        np.savez(f, latents=latents, motion=motion)
    return latents, motion


class Block(nn.Module):
    """Pre-norm transformer block: self-attention over every token, then an MLP."""
    dim: int
    heads: int
    ffn: int

    @nn.compact
    def __call__(self, x):  # [b, n, dim]
        h = nn.LayerNorm(name="norm1")(x)
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attn")(h, h)
        h = nn.LayerNorm(name="norm2")(x)
        h = nn.Dense(self.ffn, name="ffn_in")(h)
        return x + nn.Dense(self.dim, name="ffn_out")(nn.gelu(h))


class Readout(nn.Module):
    """Reference latents [b, f, h, w, c] -> grid motion [b, f - 1, 18] (pixels / 4)."""
    dim: int = 128
    heads: int = 4
    ffn: int = 512
    layers: int = 4

    @nn.compact
    def __call__(self, x):
        b, f, h, w, c = x.shape
        tokens = nn.Dense(self.dim, name="embed")(x.reshape(b, f * h * w, c))  # [b, n, dim]
        pos = self.param("pos", nn.initializers.normal(0.02), (f * h * w, self.dim))
        tokens = tokens + pos[None]
        for i in range(self.layers):
            tokens = Block(self.dim, self.heads, self.ffn, name=f"block_{i}")(tokens)
        frames = nn.LayerNorm(name="norm_out")(tokens).reshape(b, f, h * w, self.dim)
        pooled = frames.mean(axis=2)  # [b, f, dim]
        pair = jnp.concatenate([jnp.repeat(pooled[:, :1], f - 1, 1), pooled[:, 1:]], -1)
        return nn.Dense(18, name="head")(nn.gelu(nn.Dense(self.dim, name="head_in")(pair)))


def point_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean distance (pixels) between predicted and true point displacements [..., 18]."""
    diff = (pred - true).reshape(*pred.shape[:-1], 9, 2)
    return float(np.linalg.norm(diff, axis=-1).mean())


def main(argv=None):
    """The command line; bad input is one line on stderr and exit status 2."""
    with errors.exit_on_user_error():
        run(argv)


def run(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training latent record folder")
    parser.add_argument("--val", required=True, help="held-out latent record folder")
    parser.add_argument("--max_train", type=int, default=24000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--stride", type=int, default=4, help="video frames per latent frame")
    parser.add_argument("--cell", type=int, default=0,
                        help="re-cut the pixel-codec latents into cells of this many pixels "
                             "(tokens; default: the records' own)")
    parser.add_argument("--dim", type=int, default=128, help="width (the clone model's: 128)")
    parser.add_argument("--layers", type=int, default=4, help="depth (the clone model's: 4)")
    parser.add_argument("--cache", default="", help="folder for the decoded splits (.npz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="JSON file for the rows")
    args = parser.parse_args(argv)

    xtr, ytr = cached(args.cache, load_split, args.train, args.max_train, args.stride)
    xva, yva = cached(args.cache, load_split, args.val, 10 ** 9, args.stride)
    ytr, yva = ytr.reshape(*ytr.shape[:2], 18), yva.reshape(*yva.shape[:2], 18)
    if args.cell:
        cell = round((xtr.shape[-1] // 3) ** 0.5)  # the records' cell, pixels
        xtr, xva = retile(xtr, cell, args.cell), retile(xva, cell, args.cell)
    print(f"{len(xtr)} training and {len(xva)} held-out references, latents {xtr.shape[1:]}",
          flush=True)

    model = Readout(dim=args.dim, ffn=4 * args.dim, layers=args.layers)
    params = model.init(jax.random.PRNGKey(args.seed), jnp.asarray(xtr[:2], jnp.float32))
    tx = optax.adam(args.lr)
    opt = tx.init(params)

    @jax.jit
    def train_step(params, opt, x, y):
        def loss_fn(p):
            return jnp.mean((model.apply(p, x) - y / 4.0) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    predict = jax.jit(lambda p, x: model.apply(p, x) * 4.0)

    def score(x, y):
        pred = np.concatenate([np.asarray(predict(params, jnp.asarray(x[i:i + 64], jnp.float32)))
                               for i in range(0, len(x), 64)])
        return point_error(pred, y)

    rng = np.random.default_rng(args.seed)
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(xtr), args.batch)
        params, opt, loss = train_step(params, opt, jnp.asarray(xtr[idx], jnp.float32),
                                       jnp.asarray(ytr[idx]))
        if step % 250 == 0 or step == args.steps:
            print(f"step {step}: loss {float(loss):.4f}, held-out error "
                  f"{score(xva, yva):.2f} px", flush=True)

    mean_motion = ytr.mean(axis=0, keepdims=True)  # [1, f - 1, 18]
    sub = slice(0, min(len(xtr), 1000))
    rows = []
    for split, x, y in (("training", xtr[sub], ytr[sub]), ("held-out", xva, yva)):
        rows += [{"split": split, "row": "probe", "error_px": score(x, y)},
                 {"split": split, "row": "no motion (static camera)",
                  "error_px": point_error(np.zeros_like(y), y)},
                 {"split": split, "row": "training mean motion",
                  "error_px": point_error(np.broadcast_to(mean_motion, y.shape), y)}]
    print("| split | | point error (px, latent frames 1..) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['split']} | {row['row']} | {row['error_px']:.2f} |")
    if args.out:
        write_atomic(args.out, json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
