"""A jit-compiled pinhole ray caster in JAX for the procedural scenes of `scene.py`.

Every pixel casts one ray (or supersample**2 rays, box-filtered) from the camera centre through
the pixel centre, using the OpenCV camera axes and the normalised intrinsics of
`trajectories.py`. The ray is intersected analytically with all primitives at once (one-sided
planes, yawed boxes by the slab method, spheres), the nearest hit is shaded with a procedural
texture (checker, stripes, sine noise, bricks, tiles with a per-cell tint, faded out where a
texture cell gets smaller than a pixel), a sun/moon light with hard shadows from boxes and
spheres, an ambient term, a point lamp and distance fog; misses see a sky (gradient, clouds and
sun by day; stars and moon by night). Frames are vmapped in batches with `jax.lax.map`, and the
whole video is one jitted call, compiled once per (frames, height, width) shape. The output is
a pure function of the scene arrays and cameras, hence deterministic per seed (bit-identical
on one platform and JAX version; other CPUs may differ in the last bit of a transcendental).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.data.synthetic.scene import MAX_BOXES, MAX_PLANES, TEXTURES

_EPS, _FAR = 1e-3, 1e9


def _planes_t(o, d, s):
    """Hit distances [N, P] of rays o, d [N, 3] with the one-sided planes (_FAR = miss)."""
    denom = d @ s["plane_normal"].T  # [N, P]
    front = denom < -1e-6
    t = (s["plane_offset"][None] - o @ s["plane_normal"].T) / jnp.where(front, denom, -1.0)  # [N, P]
    return jnp.where(front & (t > _EPS) & s["plane_on"][None], t, _FAR)


def _to_box(v, yaw):
    """World vectors v [..., B, 3] into the frames of boxes yawed by `yaw` [B]."""
    c, sn = jnp.cos(yaw), jnp.sin(yaw)  # [B]
    return jnp.stack([c * v[..., 0] - sn * v[..., 2], v[..., 1], sn * v[..., 0] + c * v[..., 2]], -1)


def _boxes_t(o, d, s):
    """Hit distances [N, B] with the boxes (slab method, hits from outside only).

    Written per component on [N, B] arrays (no [N, B, 3] stacks) so that XLA fuses it into one loop.
    """
    c, sn = jnp.cos(s["box_yaw"])[None], jnp.sin(s["box_yaw"])[None]  # [1, B]
    rx, ry, rz = (o[:, i:i + 1] - s["box_center"][None, :, i] for i in range(3))  # [N, B] each
    dx, dy, dz = d[:, 0:1], d[:, 1:2], d[:, 2:3]  # [N, 1] each
    near, far = jnp.full(rx.shape, -_FAR), jnp.full(rx.shape, _FAR)
    for ol, dl, h in ((c * rx - sn * rz, c * dx - sn * dz, s["box_half"][None, :, 0]),
                      (ry, jnp.broadcast_to(dy, rx.shape), s["box_half"][None, :, 1]),
                      (sn * rx + c * rz, sn * dx + c * dz, s["box_half"][None, :, 2])):
        inv = 1.0 / jnp.where(jnp.abs(dl) < 1e-9, 1e-9, dl)
        t1, t2 = (-h - ol) * inv, (h - ol) * inv  # [N, B]
        near, far = jnp.maximum(near, jnp.minimum(t1, t2)), jnp.minimum(far, jnp.maximum(t1, t2))
    return jnp.where((far >= near) & (near > _EPS) & s["box_on"][None], near, _FAR)


def _spheres_t(o, d, centre, radius):
    """Hit distances [N, S] with spheres centre [S, 3], radius [S] (zero radius = absent)."""
    ox, oy, oz = (o[:, i:i + 1] - centre[None, :, i] for i in range(3))  # [N, S] each
    b = ox * d[:, 0:1] + oy * d[:, 1:2] + oz * d[:, 2:3]  # [N, S]
    disc = b * b - (ox * ox + oy * oy + oz * oz - radius[None] ** 2)
    t = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
    return jnp.where((disc > 0) & (t > _EPS) & (radius[None] > 0), t, _FAR)


def _square(x, sharp):
    """A soft square wave in [-1, 1] with period 2 (sign of sin(pi x), softened by `sharp`)."""
    return jnp.clip(jnp.sin(jnp.pi * x) * sharp, -1.0, 1.0)


def _hash2(a, b):
    """A per-cell pseudo-random number in [0, 1) from integer-valued floats a, b."""
    return jnp.mod(jnp.sin(a * 12.9898 + b * 78.233) * 43758.5453, 1.0)


def _texture(tex, uv, footprint):
    """Pattern value [N] in [-1, 1] and a cell tint [N] for texture ids tex [N] at uv [N, 2]
    (in cells); `footprint` [N] is the pixel size in cells, used to fade sub-pixel detail."""
    u, v = uv[:, 0], uv[:, 1]
    sharp = jnp.clip(0.5 / jnp.maximum(footprint, 1e-4), 1.0, 10.0)
    fu, fv = u - jnp.floor(u), v - jnp.floor(v)
    row = jnp.floor(2 * v)
    ub = u + 0.5 * jnp.mod(row, 2.0)
    patterns = [
        jnp.zeros_like(u),  # flat
        _square(u, sharp) * _square(v, sharp),  # checker
        _square(u, sharp),  # stripes
        (jnp.sin(2.1 * u + 1.3 * v) + jnp.sin(-1.7 * u + 2.9 * v + 1.0) + jnp.sin(3.7 * u - 0.6 * v + 2.0)
         + jnp.sin(5.3 * u + 4.1 * v)) / 2.5,  # noise
        jnp.where(((ub - jnp.floor(ub)) < 0.06) | ((2 * v - row) < 0.12), -1.0, 0.6),  # bricks
        jnp.where((fu < 0.05) | (fv < 0.05), -1.0, 0.6),  # tiles
    ]
    value = jnp.select([tex == i for i in range(len(TEXTURES))], patterns, 0.0)
    cell_u = jnp.where(tex == 4, jnp.floor(ub), jnp.floor(u))
    tint = jnp.where(tex == 0, 0.5, _hash2(cell_u, jnp.where(tex == 4, row, jnp.floor(v))))
    fade = jnp.clip(2.0 - 3.0 * footprint, 0.0, 1.0)  # 1 while a cell spans >= 3 pixels
    return jnp.clip(value, -1, 1) * fade, 0.5 + (tint - 0.5) * fade


def _tangent_uv(q, n):
    """Surface coordinates [N, 2] of points q [N, 3] on faces with normals n [N, 3] (same frame):
    the two axes other than the normal's dominant one, the second vertical on walls."""
    a = jnp.argmax(jnp.abs(n), -1)  # [N]
    return jnp.where((a == 1)[:, None], q[:, [0, 2]],
                     jnp.where((a == 0)[:, None], q[:, [2, 1]], q[:, [0, 1]]))


def _sky(d, s):
    """Sky colour [N, 3] for ray directions d [N, 3]."""
    elev = jnp.clip(-d[:, 1], 0.0, 1.0)
    col = s["sky_horizon"] + (s["sky_top"] - s["sky_horizon"]) * jnp.sqrt(elev)[:, None]
    proj = d[:, [0, 2]] / jnp.maximum(-d[:, 1], 0.05)[:, None] * 1.5  # [N, 2] on a cloud layer
    cloud = (jnp.sin(proj[:, 0] * 1.3 + jnp.sin(proj[:, 1] * 0.7)) + jnp.sin(proj[:, 1] * 1.1 + 2.0)
             + 0.5 * jnp.sin(3.1 * proj[:, 0] + 2.3 * proj[:, 1]))
    cloud = jnp.clip((cloud - 0.6) / 1.2, 0.0, 1.0) * jnp.clip(elev * 6, 0, 1) * (1 - s["night"])
    col = col + (0.95 - col) * cloud[:, None]
    cell = jnp.floor(d * 120.0)
    star = (_hash2(cell[:, 0] + 7.0 * cell[:, 2], cell[:, 1]) > 0.995) & (elev > 0.05)
    disc = (d @ s["sun_dir"] > 0.9993) & (elev > 0)
    return col + s["night"] * 0.8 * star[:, None] + disc[:, None] * jnp.array([1.0, 0.95, 0.8])


def _shade(o, d, s, time, pixel_angle, shadows):
    """Colour [N, 3] and primitive id [N] (-1 = sky) of rays from o [3] along d [N, 3]."""
    centres = jnp.concatenate([s["sphere_center"], s["subject_center"][time]])  # [S+K, 3]
    radii = jnp.concatenate([s["sphere_radius"], s["subject_radius"]])  # [S+K]
    ob = jnp.broadcast_to(o, d.shape)  # [N, 3]
    t_all = jnp.concatenate(
        [_planes_t(ob, d, s), _boxes_t(ob, d, s), _spheres_t(ob, d, centres, radii)], -1)  # [N, M]
    idx = jnp.argmin(t_all, -1)  # [N]
    t = jnp.take_along_axis(t_all, idx[:, None], -1)[:, 0]  # [N]
    p = ob + t[:, None] * d  # [N, 3]
    # normals n (world) and texture-frame coordinates q, nl per primitive type
    ip = jnp.clip(idx, 0, MAX_PLANES - 1)
    ib = jnp.clip(idx - MAX_PLANES, 0, MAX_BOXES - 1)
    isp = jnp.clip(idx - MAX_PLANES - MAX_BOXES, 0, len(radii) - 1)
    n_plane = s["plane_normal"][ip]
    q_plane, nl_plane = (p - s["tex_off"]) @ s["tex_rot"], n_plane @ s["tex_rot"]
    yaw = s["box_yaw"][ib]
    q_box = _to_box((p - s["box_center"][ib])[:, None, :], yaw[:, None])[:, 0]  # [N, 3]
    rel = q_box / jnp.maximum(s["box_half"][ib], 1e-6)
    axis = jnp.argmax(jnp.abs(rel), -1)
    nl_box = jax.nn.one_hot(axis, 3) * jnp.sign(jnp.take_along_axis(rel, axis[:, None], -1))
    c, sn = jnp.cos(yaw)[:, None], jnp.sin(yaw)[:, None]
    n_box = jnp.stack([c[:, 0] * nl_box[:, 0] + sn[:, 0] * nl_box[:, 2], nl_box[:, 1],
                       -sn[:, 0] * nl_box[:, 0] + c[:, 0] * nl_box[:, 2]], -1)
    q_sph = p - centres[isp]
    n_sph = q_sph / jnp.maximum(radii[isp], 1e-6)[:, None]
    kind = jnp.where(idx < MAX_PLANES, 0, jnp.where(idx < MAX_PLANES + MAX_BOXES, 1, 2))[:, None]
    pick = lambda a, b, c_: jnp.where(kind == 0, a, jnp.where(kind == 1, b, c_))  # noqa: E731
    n, q, nl = pick(n_plane, n_box, n_sph), pick(q_plane, q_box, q_sph), pick(nl_plane, nl_box, n_sph)
    n = jnp.where(jnp.sum(n * d, -1, keepdims=True) > 0, -n, n)
    # texture
    scale = s["tex_scale"][idx]
    cos_in = jnp.maximum(jnp.abs(jnp.sum(n * d, -1)), 0.15)
    value, tint = _texture(s["texture"][idx], _tangent_uv(q, nl) / scale[:, None],
                           t * pixel_angle / cos_in / scale)
    albedo = s["color_b"][idx] + (s["color_a"][idx] - s["color_b"][idx]) * (0.5 + 0.5 * value)[:, None]
    albedo = albedo * (0.8 + 0.4 * tint)[:, None]
    # lighting
    sun = jnp.maximum(n @ s["sun_dir"], 0.0)  # [N]
    if shadows:
        so = p + n * 2e-3
        sd = jnp.broadcast_to(s["sun_dir"], d.shape)
        blocked = jnp.minimum(_boxes_t(so, sd, s).min(-1),
                              _spheres_t(so, sd, centres, radii).min(-1)) < _FAR  # [N]
        sun = jnp.where(blocked, 0.0, sun)
    to_lamp = s["lamp_pos"] - p
    dist2 = jnp.sum(to_lamp**2, -1)
    lamp = jnp.maximum(jnp.sum(n * to_lamp, -1), 0.0) / jnp.sqrt(dist2 + 1e-6) / (1.0 + 0.08 * dist2)
    light = s["ambient"] + sun[:, None] * s["sun_color"] + lamp[:, None] * s["lamp_color"]
    col = albedo * light
    fog = 1.0 - jnp.exp(-s["fog_density"] * t)
    col = col + (s["fog_color"] - col) * fog[:, None]
    hit = t < _FAR
    return jnp.where(hit[:, None], col, _sky(d, s)), jnp.where(hit, idx, -1)


def _render_frame(s, c2w, intr, time, height, width, supersample, shadows):
    """One frame: colour [H, W, 3] float in [0, 1] and ids [H, W] (at each pixel's first sample)."""
    hs, ws = height * supersample, width * supersample
    ys, xs = jnp.meshgrid((jnp.arange(hs) + 0.5) / hs, (jnp.arange(ws) + 0.5) / ws, indexing="ij")
    cam = jnp.stack([(xs - intr[2]) / intr[0], (ys - intr[3]) / intr[1], jnp.ones_like(xs)], -1)
    cam = cam / jnp.linalg.norm(cam, axis=-1, keepdims=True)  # [hs, ws, 3]
    d = cam.reshape(-1, 3) @ c2w[:3, :3].T  # [hs*ws, 3] world directions
    col, ids = _shade(c2w[:3, 3], d, s, time, 1.0 / (intr[0] * width), shadows)
    col = col.reshape(height, supersample, width, supersample, 3).mean((1, 3))  # [H, W, 3]
    ids = ids.reshape(height, supersample, width, supersample)[:, 0, :, 0]  # [H, W]
    return jnp.clip(col, 0.0, 1.0), ids


@functools.partial(jax.jit, static_argnames=("height", "width", "supersample", "shadows", "batch_size"))
def _render_jit(s, c2w, intr, times, height, width, supersample, shadows, batch_size):
    def one(args):
        col, ids = _render_frame(s, *args, height, width, supersample, shadows)
        return jnp.round(col * 255.0).astype(jnp.uint8), ids.astype(jnp.int32)
    return jax.lax.map(one, (c2w, intr, times), batch_size=batch_size)


def render(scene_arrays, c2w, intrinsics, times, height, width, supersample=2, shadows=True,
           batch_size=8):
    """Renders frames of one scene.

    Args:
      scene_arrays: `Scene.arrays` (fixed-shape numpy arrays, world frame).
      c2w: [N, 4, 4] camera-to-world poses (OpenCV axes).
      intrinsics: [N, 4] normalised (fx, fy, cx, cy).
      times: [N] int frame indices into the subject animation ([0, T)).
      height, width: output size in pixels; supersample: rays per pixel per axis.
    Returns:
      (frames uint8 [N, H, W, 3], ids int32 [N, H, W]) as numpy arrays; ids index the primitives
      (planes, boxes, spheres, subject spheres in that order), -1 for sky.
    """
    c2w = np.asarray(c2w, np.float32)
    n = len(c2w)
    if c2w.shape != (n, 4, 4) or np.shape(intrinsics) != (n, 4) or np.shape(times) != (n,):
        raise ValueError(f"expected c2w [N, 4, 4], intrinsics [N, 4], times [N]; got "
                         f"{c2w.shape}, {np.shape(intrinsics)}, {np.shape(times)}")
    if height < 1 or width < 1 or supersample < 1:
        raise ValueError(f"bad render size {height}x{width} (supersample {supersample})")
    num_times = scene_arrays["subject_center"].shape[0]
    times = np.asarray(times, np.int32)
    if times.min() < 0 or times.max() >= num_times:
        raise ValueError(f"times must lie in [0, {num_times}), got [{times.min()}, {times.max()}]")
    s = {k: jnp.asarray(v) for k, v in scene_arrays.items()}
    frames, ids = _render_jit(s, jnp.asarray(c2w), jnp.asarray(intrinsics, jnp.float32),
                              jnp.asarray(times), height, width, supersample, shadows,
                              min(batch_size, n))
    return np.asarray(frames), np.asarray(ids)
