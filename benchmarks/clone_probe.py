"""The wallpaper clone probe: I2V camera cloning with token-exact motion and sharp content.

The shift probe's fields are smooth and its content reference static, so a model that reads the
camera cannot tell which camera-reference frame lines up with the content, and matching smooth
patches is blurred. Here every scene is a periodic wallpaper of i.i.d. Gaussian latent cells
(one cell = one token with --patch 1) exactly the size of the frame, and the camera pans over it
by a per-example integer velocity v in {-m..m}^2 cells per frame (m = --max_speed), wrapping
around (a camera turning in a world at infinity, nothing new enters the view). The camera
reference is wallpaper A moving by k v in frame k; the target is wallpaper B moving by k v, and
its frame 0 is given as the I2V first-frame channels (--i2v is forced), exactly as CamClone's
I2V task feeds it. So the target is predictable from the first frame and the camera reference
and from nothing less: a two-layer "previous token + induction" circuit does it (each target
token gathers the camera reference at its own place and frame, then finds where that camera
content sat in frame 0 and copies the first frame there).

Logged: clean-sample error (later frames) at t = --probe_t with the camera reference and with
it zeroed. Header: copy_first_frame_err (every frame predicted as frame 0) and no_camera_floor,
the least error reachable from the first frame alone (its mean over the velocity prior, exact).
An error with the camera reference below no_camera_floor proves the model reads the camera.

  python benchmarks/clone_probe.py --steps 20000 --dim 64 --head_dim 32 --layers 2 \\
      --frames 4 --height 6 --width 6 --channels 16 --t_min 0.5 --out /tmp/clone.jsonl
"""
import argparse
import functools

import jax
import jax.numpy as jnp

from camclone_jax.data.wallpaper import WallpaperWorld, rolled

import probe_lib

CASES = {"no_camera": (True, False)}


def make_task(max_speed: int, same_scene: float = 0.0):
    """Returns make_batch(key, shape) -> (target, cam_ref, content_ref = zeros), each ``shape``
    [b, f, h, w, c], and no_camera_best(target), the best prediction of ``target`` from its
    frame 0 alone (the first frame averaged over every velocity's shifts). A fraction
    ``same_scene`` of the training examples films the target's own wallpaper for the camera
    reference (a curriculum aid: the reference is then the answer itself); the probe's
    measurement batch never does."""
    table = jnp.asarray(WallpaperWorld(max_speed=max_speed).velocities())  # [V, 2]

    def make_batch(key, shape, same_scene=same_scene):
        b, f, h, w, c = shape
        ka, kb, kv, ks = jax.random.split(key, 4)
        wall_b = jax.random.normal(kb, (b, h, w, c))  # target scene
        same = jax.random.uniform(ks, (b, 1, 1, 1)) < same_scene  # [b, 1, 1, 1]
        wall_a = jnp.where(same, wall_b, jax.random.normal(ka, (b, h, w, c)))  # camera scene
        vel = table[jax.random.randint(kv, (b,), 0, len(table))]  # [b, 2]
        shifts = jnp.arange(f)[None, :, None] * vel[:, None, :]  # [b, f, 2]
        target = rolled(wall_b, shifts)  # [b, f, h, w, c]
        return target, rolled(wall_a, shifts), jnp.zeros_like(target)

    def no_camera_best(target):
        b, f = target.shape[:2]
        shifts = jnp.arange(f)[None, :, None] * table[:, None, :]  # [V, f, 2]
        per_v = jax.vmap(lambda s: rolled(target[:, 0], jnp.broadcast_to(s, (b,) + s.shape)))(
            shifts)  # [V, b, f, h, w, c]
        return per_v.mean(0)  # [b, f, h, w, c]

    return make_batch, no_camera_best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_lib.add_args(p, steps=20_000, frames=4, height=6, width=6, channels=16, patch=1,
                       dim=64, head_dim=32, t_min=0.5)
    p.add_argument("--max_speed", type=int, default=1, help="cells per frame, each axis")
    p.add_argument("--same_scene", type=float, default=0.0,
                   help="fraction of training examples whose camera reference films the "
                        "target's own wallpaper (never in the measurement)")
    args = p.parse_args(argv)
    args.i2v = True
    make_batch, no_camera_best = make_task(args.max_speed, args.same_scene)
    shape = (args.probe_batch, args.frames, args.height, args.width, args.channels)
    key = jax.random.split(probe_lib.probe_key(args.seed))[0]  # the measurement batch's key
    held_out = functools.partial(make_batch, same_scene=0.0)  # the measurement: other scenes
    target = held_out(key, shape)[0]
    floor = float(jnp.mean((no_camera_best(target) - target)[:, 1:] ** 2))
    copy = float(jnp.mean((target[:, 1:] - target[:, :1]) ** 2))
    return probe_lib.train_probe(args, make_batch, CASES, {
        "task": "wallpaper_clone", "no_camera_floor": floor, "copy_first_frame_err": copy}, measure_batch=held_out)


if __name__ == "__main__":
    main()
