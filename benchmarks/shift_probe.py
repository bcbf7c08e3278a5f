"""Does a DiT learn to clone a camera? The shift probe: camera cloning in its simplest form.

Each example draws two random smooth RGB fields (periodic, Gaussian-blurred white noise, unit
variance) and a 2D velocity v (pixels per frame, uniform in [-max_speed, max_speed]^2). The
camera reference is field A translated by k v in frame k; the content reference is field B,
static; the target is field B translated by k v, i.e. the content moving as the camera
reference does. Translation is exact (a phase ramp on the fields' spectra). Frames are
space-to-depth'd into pixel-like latents [f, H/s, W/s, s*s*3] (s = --s2d), the CamClone DiT
reads [x_t | camera ref | content ref] as frame-concatenated tokens, and the probe logs the
clean-sample error at t = --probe_t with the true references, with the camera reference zeroed
("no_camera") and with the content reference zeroed ("no_content"): the two reference-use gaps.
The header's copy_content_err is the static-content baseline (every target frame predicted as
the content frame) and no_camera_floor the least error any predictor reaches from the content
alone (the mean of the content over the velocity prior, computed exactly; it ignores the
t-weighted trace of the target left in x_t). A with-references error below no_camera_floor is
proof that the model reads the camera reference.

  python benchmarks/shift_probe.py --steps 10000 --dim 128 --head_dim 64 --layers 2 \\
      --lr 1e-3 --t_sampler uniform --loss sample --out /tmp/shift.jsonl

Defaults: 5 latent frames of 8 x 14 x 48 (32 x 56 pixels, 4x4 space-to-depth), 2x2 patches:
140 tokens a segment, 420 in all.
"""
import argparse

import jax
import jax.numpy as jnp

import probe_lib
from camclone_jax.data import wallpaper

CASES = {"no_camera": (True, False), "no_content": (False, True)}


def space_to_depth(frames, s: int):
    """[n, f, H, W, 3] pixels -> [n, f, H/s, W/s, s*s*3] pixel-like latents."""
    n, f, h, w, c = frames.shape
    x = frames.reshape(n, f, h // s, s, w // s, s, c)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(n, f, h // s, w // s, s * s * c)


def make_task(s2d: int, max_speed: float, blur: float):
    """Returns make_batch(key, shape) -> (target, cam_ref, content_ref), each ``shape`` =
    [b, f, h, w, s2d*s2d*3]; make_batch_with_velocity, which also returns the velocities
    [b, 2] drawn (pixels per frame); and content_only(key, shape), the best prediction of
    that batch's target from its content reference alone (same shape)."""

    def scenes(key, shape):
        b, f, h, w, c = shape
        if c != s2d * s2d * 3:
            raise ValueError(f"--channels {c} must be 3 * s2d^2 = {3 * s2d * s2d}")
        ka, kb, kv = jax.random.split(key, 3)
        hp, wp = h * s2d, w * s2d
        spec_a = wallpaper.smooth_spectra(ka, b, hp, wp, blur)  # [b, hp, wp, 3] camera ref scene
        spec_b = wallpaper.smooth_spectra(kb, b, hp, wp, blur)  # [b, hp, wp, 3] content scene
        return spec_a, spec_b, kv

    def content_only(key, shape):
        _, spec_b, _ = scenes(key, shape)  # [b, hp, wp, 3]
        hp, wp = spec_b.shape[1:3]
        fy = jnp.fft.fftfreq(hp)[:, None]  # [hp, 1]
        fx = jnp.fft.fftfreq(wp)[None, :]  # [1, wp]
        k = jnp.arange(shape[1])[:, None, None]  # [f, 1, 1]
        # E over v ~ U[-m, m]^2 of the phase ramp of a shift by k v: a product of sincs
        mean_ramp = jnp.sinc(2 * max_speed * k * fy) * jnp.sinc(2 * max_speed * k * fx)
        frames = jnp.fft.ifft2(spec_b[:, None] * mean_ramp[None, ..., None], axes=(2, 3)).real
        return space_to_depth(frames, s2d)  # [b, f, h, w, c]

    def make_batch_with_velocity(key, shape):
        b, f = shape[:2]
        spec_a, spec_b, kv = scenes(key, shape)
        vel = jax.random.uniform(kv, (b, 2), minval=-max_speed, maxval=max_speed)  # [b, 2]
        shifts = jnp.arange(f)[None, :, None] * vel[:, None, :]  # [b, f, 2]
        cam = space_to_depth(wallpaper.translated_spectra(spec_a, shifts), s2d)  # [b, f, h, w, c]
        target = space_to_depth(wallpaper.translated_spectra(spec_b, shifts), s2d)  # same
        content = jnp.broadcast_to(target[:, :1], target.shape)  # [b, f, h, w, c] static
        return target, cam, content, vel

    def make_batch(key, shape):
        return make_batch_with_velocity(key, shape)[:3]

    return make_batch, make_batch_with_velocity, content_only


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_lib.add_args(p, steps=10_000)
    p.add_argument("--s2d", type=int, default=4, help="pixels per latent cell along each axis")
    p.add_argument("--max_speed", type=float, default=2.0, help="pixels per frame, each axis")
    p.add_argument("--blur", type=float, default=2.0, help="field smoothness, pixels")
    args = p.parse_args(argv)
    make_batch, _, content_only = make_task(args.s2d, args.max_speed, args.blur)
    shape = (args.probe_batch, args.frames, args.height, args.width, args.channels)
    key = jax.random.split(probe_lib.probe_key(args.seed))[0]  # the measurement batch's key
    target = make_batch(key, shape)[0]
    floor = float(jnp.mean((content_only(key, shape) - target) ** 2))
    return probe_lib.train_probe(args, make_batch, CASES, {"task": "shift",
                                                           "no_camera_floor": floor})


if __name__ == "__main__":
    main()
