"""Camera trajectory rules of the Camera Clone Dataset: per-frame c2w poses and intrinsics.

Pose convention (used everywhere in camclone_jax):
  * Camera axes are OpenCV's: +x right, +y down, +z forward (the viewing direction).
  * A pose is a camera-to-world matrix c2w [4, 4] = [[R, t], [0, 0, 0, 1]]: the columns of R are
    the camera axes in world coordinates and t is the camera centre.
  * The synthetic world frame is aligned with a level camera at rest: +x east, +y DOWN (gravity),
    +z north; the ground is the plane y = 0, so points above the ground have y < 0. The identity
    c2w is a level camera on the origin looking along +z.
  * Moves are applied in the camera's own frame, c2w_i = c2w_0 @ M_i:
      pan right by a     M = rot_y(+a)   (right-handed about the camera's +y (down) axis, i.e. a
                                          turn about the up axis that swings +z towards +x)
      tilt up by a       M = rot_x(+a)   (+z swings towards -y, up)
      roll by a          M = rot_z(+a)   (+x swings towards +y: clockwise through the lens)
      truck right / pedestal up / dolly in by d: translation (+d, 0, 0) / (0, -d, 0) / (0, 0, +d)
  * Intrinsics are normalised (fx, fy, cx, cy): fx = focal / sensor width (36 mm), fy = fx * W / H,
    cx = cy = 0.5, as in RealEstate10K; `intrinsics_matrix` gives pixel K for a resolution.

A trajectory is fully described by a name and a JSON-serialisable parameter dict
(`build_trajectory(name, params, num_frames, aspect)` rebuilds it exactly), so captions, tests and
metadata can refer to it. `sample_trajectory` draws the rules of the paper (section 4) and of its
sister dataset ReCamMaster: basic moves (pan/tilt 5-75 deg, roll 20-340 deg, truck/pedestal/dolly),
arcs (orbit 10-75 deg plus 5-15 deg secondary rotations), smooth splines through 2-4 keypoints
(half with multi-axis rotation) and static shots; starts on a hemisphere around the subject
(radius 3/4.5/6 m, pitch 5-40 deg: ReCamMaster's 3/5/7/10 m
scaled to our small frames); constant speed or the ease profile
L_i = L_s + (L_e - L_s)(1 - exp(-a i / f)) / (1 - exp(-a)); focal lengths 18/24/35/50 mm; travel
capped by a maximum distance. All trajectories live in a *location frame* whose origin is the
subject's home on the ground; a location places that frame in its world with an anchor pose.
"""
import dataclasses
import math

import numpy as np

SENSOR_WIDTH_MM = 36.0
BASIC_MOVES = ("pan", "tilt", "roll", "truck", "pedestal", "dolly")
TRAJECTORY_NAMES = BASIC_MOVES + ("orbit", "spline", "static")


# ----------------------------------------------------------------------------- rotations, poses
def rot_x(a):
    """Right-handed rotation [3, 3] by `a` radians about the x axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)


def rot_y(a):
    """Right-handed rotation [3, 3] by `a` radians about the y axis (down: +z swings to +x)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)


def rot_z(a):
    """Right-handed rotation [3, 3] by `a` radians about the z axis (+x swings to +y)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


def rot_axis(axis, a):
    """Right-handed rotation [3, 3] by `a` radians about the unit vector `axis` (Rodrigues)."""
    x, y, z = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def make_pose(rotation, translation):
    """Builds a 4x4 c2w from a rotation [3, 3] and a camera centre [3]."""
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = translation
    return pose


def invert_pose(pose):
    """Rigid inverse of poses [..., 4, 4] (c2w <-> w2c) without a general matrix inverse."""
    pose = np.asarray(pose, np.float64)
    rt = np.swapaxes(pose[..., :3, :3], -1, -2)  # [..., 3, 3]
    out = np.zeros_like(pose)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, pose[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def relative_to_first(c2w):
    """Poses [F, 4, 4] expressed relative to the first one: inv(c2w_0) @ c2w_i."""
    return invert_pose(c2w[0])[None] @ np.asarray(c2w, np.float64)  # [F, 4, 4]


def look_at(eye, target):
    """c2w [4, 4] of a level-horizon camera at `eye` looking at `target` (world +y is down)."""
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    if np.linalg.norm(x) < 1e-8:
        raise ValueError("look_at: viewing direction is vertical; the roll is undefined")
    x /= np.linalg.norm(x)
    return make_pose(np.stack([x, np.cross(z, x), z], axis=1), eye)


# ----------------------------------------------------------------------------- intrinsics, speed
def intrinsics_from_focal(focal_mm, aspect, sensor_width_mm=SENSOR_WIDTH_MM):
    """Normalised (fx, fy, cx, cy) [4] of a full-frame lens; aspect = width / height."""
    fx = focal_mm / sensor_width_mm
    return np.array([fx, fx * aspect, 0.5, 0.5], np.float64)


def intrinsics_matrix(intrinsics, height, width):
    """Pixel-unit K [..., 3, 3] from normalised intrinsics [..., 4] at a given resolution."""
    intrinsics = np.asarray(intrinsics, np.float64)
    k = np.zeros(intrinsics.shape[:-1] + (3, 3))
    k[..., 0, 0] = intrinsics[..., 0] * width
    k[..., 1, 1] = intrinsics[..., 1] * height
    k[..., 0, 2] = intrinsics[..., 2] * width
    k[..., 1, 2] = intrinsics[..., 3] * height
    k[..., 2, 2] = 1.0
    return k


def speed_profile(num_frames, ease_a=0.0):
    """Progress s [F] from 0 to 1: constant speed (ease_a == 0) or the ease profile.

    The ease profile is L_i = (1 - exp(-a i / f)) / (1 - exp(-a)) with f = F - 1 (L_s = 0,
    L_e = 1): a > 0 starts fast and decelerates; a < 0 (our extension) accelerates.
    """
    i = np.arange(num_frames, dtype=np.float64)
    f = max(num_frames - 1, 1)
    if abs(ease_a) < 1e-6:
        return i / f
    return (1.0 - np.exp(-ease_a * i / f)) / (1.0 - math.exp(-ease_a))


# ----------------------------------------------------------------------------- trajectories
@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One camera path in the location frame: c2w [F, 4, 4], intrinsics [F, 4], name, params."""
    name: str
    params: dict
    c2w: np.ndarray
    intrinsics: np.ndarray

    def describe(self):
        """A short English description of the move, e.g. 'pans right 42 deg, 35 mm lens'."""
        return describe_trajectory(self.name, self.params)


def start_pose(start):
    """c2w [4, 4] from a start spec {radius, azimuth_deg, pitch_deg, target}: on a hemisphere
    of `radius` around `target`, azimuth 0 looking along +z, pitch > 0 looking down."""
    az, pitch = math.radians(start["azimuth_deg"]), math.radians(start["pitch_deg"])
    target = np.asarray(start["target"], np.float64)
    offset = np.array([-math.sin(az) * math.cos(pitch), -math.sin(pitch),
                       -math.cos(az) * math.cos(pitch)])
    return look_at(target + start["radius"] * offset, target)


def _catmull_rom(points, u):
    """Uniform Catmull-Rom spline through points [K, D] at parameters u [N] in [0, 1] -> [N, D]."""
    pts = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    seg = np.minimum((u * (len(points) - 1)).astype(int), len(points) - 2)  # [N]
    t = (u * (len(points) - 1) - seg)[:, None]  # [N, 1]
    p0, p1, p2, p3 = pts[seg], pts[seg + 1], pts[seg + 2], pts[seg + 3]
    return 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                  + (3 * p1 - p0 - 3 * p2 + p3) * t**3)


def _spline_motion(params, s):
    """Local motions [F, 4, 4] along a spline through keypoints, constant arc-length speed."""
    points = np.asarray(params["keypoints"], np.float64)  # [K, 3] camera-local, first = 0
    angles = np.radians(np.asarray(params["keyangles_deg"], np.float64))  # [K, 3] yaw/pitch/roll
    fine = np.linspace(0.0, 1.0, 512)
    curve = _catmull_rom(points, fine)  # [512, 3]
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    u = np.interp(s * length[-1], length, fine) if length[-1] > 1e-9 else s  # [F]
    pos, ang = _catmull_rom(points, u), _catmull_rom(angles, u)  # [F, 3], [F, 3]
    return np.stack([make_pose(rot_y(a[0]) @ rot_x(a[1]) @ rot_z(a[2]), p)
                     for p, a in zip(pos, ang)])


def _world_poses(name, params, c0, s):
    """c2w [F, 4, 4] in the location frame for start pose c0 [4, 4] and progress s [F]."""
    if name == "static":
        return np.repeat(c0[None], len(s), axis=0)
    if name in ("pan", "tilt", "roll"):
        rot = {"pan": rot_y, "tilt": rot_x, "roll": rot_z}[name]
        a = math.radians(params["angle_deg"])
        return np.stack([c0 @ make_pose(rot(a * si), np.zeros(3)) for si in s])
    if name in ("truck", "pedestal", "dolly"):
        axis = {"truck": [1, 0, 0], "pedestal": [0, -1, 0], "dolly": [0, 0, 1]}[name]
        d = params["distance_m"] * np.asarray(axis, np.float64)
        return np.stack([c0 @ make_pose(np.eye(3), d * si) for si in s])
    if name == "orbit":
        pivot = c0[:3, 3] + c0[:3, 2] * params["pivot_distance_m"]
        out = []
        for si in s:
            r1 = rot_y(-math.radians(params["angle_deg"]) * si)  # world-vertical orbit, + = to the right
            cam_x = r1 @ c0[:3, 0]
            r2 = rot_axis(cam_x, -math.radians(params["elevation_deg"]) * si)  # + = camera rises
            rot = r2 @ r1 @ c0[:3, :3] @ rot_z(math.radians(params["roll_deg"]) * si)
            out.append(make_pose(rot, pivot + r2 @ r1 @ (c0[:3, 3] - pivot)))
        return np.stack(out)
    if name == "spline":
        return c0[None] @ _spline_motion(params, s)
    raise ValueError(f"unknown trajectory name {name!r}; expected one of {TRAJECTORY_NAMES}")


def build_trajectory(name, params, num_frames, aspect, c0=None):
    """Rebuilds a trajectory exactly from its name and parameter dict (see `sample_trajectory`);
    c0 [4, 4], when given, is the start pose instead of `start_pose(params["start"])` (a move
    that continues another one, `moves.py`)."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    s = speed_profile(num_frames, params.get("ease_a", 0.0))  # [F]
    c0 = start_pose(params["start"]) if c0 is None else np.asarray(c0, np.float64)  # [4, 4]
    c2w = _world_poses(name, params, c0, s)  # [F, 4, 4]
    intr = np.tile(intrinsics_from_focal(params["focal_mm"], aspect), (num_frames, 1))  # [F, 4]
    return Trajectory(name, params, c2w.astype(np.float32), intr.astype(np.float32))


def describe_trajectory(name, p):
    """English description of a trajectory from its name and parameters (for captions)."""
    return f"The camera {describe_move(name, p)}, {describe_speed(p)}, with a {p['focal_mm']:.0f} mm lens."


def describe_speed(p):
    """The speed profile of parameters `p` in words: 'at constant speed', 'easing out' or in."""
    ease = p.get("ease_a", 0.0)
    return "at constant speed" if ease == 0 else ("easing out" if ease > 0 else "easing in")


def describe_move(name, p):
    """The move of a trajectory in words, e.g. 'pans right 42 deg' (`moves.py` reads it back)."""
    sign = lambda v, pos, neg: pos if v >= 0 else neg  # noqa: E731
    if name == "static":
        move = "stays still"
    elif name in ("pan", "tilt", "roll"):
        words = {"pan": ("right", "left"), "tilt": ("up", "down"),
                 "roll": ("clockwise", "counterclockwise")}
        move = f"{name}s {sign(p['angle_deg'], *words[name])} {abs(p['angle_deg']):.0f} deg"
    elif name in ("truck", "pedestal", "dolly"):
        words = {"truck": ("right", "left"), "pedestal": ("up", "down"), "dolly": ("in", "out")}
        move = f"{name}s {sign(p['distance_m'], *words[name])} {abs(p['distance_m']):.1f} m"
    elif name == "orbit":
        move = (f"orbits {sign(p['angle_deg'], 'right', 'left')} {abs(p['angle_deg']):.0f} deg around "
                f"the subject while {sign(p['elevation_deg'], 'rising', 'descending')} "
                f"{abs(p['elevation_deg']):.0f} deg")
    else:
        move = (f"follows a smooth path through {len(p['keypoints'])} keypoints"
                + (" with multi-axis rotation" if p["multi_axis"] else ""))
    return move


@dataclasses.dataclass(frozen=True)
class TrajectoryConfig:
    """Sampling ranges and the safe region (location frame, metres) every camera must stay in."""
    radii: tuple = (3.0, 4.5, 6.0)
    pitch_deg: tuple = (5.0, 40.0)
    focal_mm: tuple = (18.0, 24.0, 35.0, 50.0)
    max_travel: float = 4.0
    safe_half_extent: float = 9.0
    height_range: tuple = (0.4, 6.0)
    subject_clearance: float = 1.8
    kind_weights: tuple = (("basic", 0.45), ("arc", 0.2), ("spline", 0.3), ("static", 0.05))
    # a restricted world (the rotation-only clone world of configs/clone_3d.py): when `moves`
    # names basic moves, only those are drawn, uniformly, pans and tilts turning by
    # `angle_deg`, rolls by `roll_deg` (ranges in degrees, either sign), at constant speed
    # when `constant_speed`; empty `moves` is the paper's mix above
    moves: tuple = ()
    angle_deg: tuple = (5.0, 75.0)
    roll_deg: tuple = (20.0, 340.0)
    constant_speed: bool = False

    def __post_init__(self):
        unknown = [m for m in self.moves if m not in BASIC_MOVES + ("static",)]
        if unknown:
            raise ValueError(f"unknown moves {unknown}; choose from {BASIC_MOVES + ('static',)}")


def check_trajectory(c2w, config):
    """Returns '' if the camera centres stay in the safe region and travel cap, else the reason."""
    centres = np.asarray(c2w, np.float64)[:, :3, 3]  # [F, 3]
    if np.abs(centres[:, [0, 2]]).max() > config.safe_half_extent:
        return "leaves the safe region"
    height = -centres[:, 1]
    if height.min() < config.height_range[0] or height.max() > config.height_range[1]:
        return "height out of range"
    if np.linalg.norm(centres[:, [0, 2]], axis=1).min() < config.subject_clearance:
        return "too close to the subject"
    if np.linalg.norm(centres - centres[:1], axis=1).max() > config.max_travel + 1e-6:
        return "travels further than max_travel"
    return ""


def _sample_params(rng, config):
    """Draws (name, params) of one trajectory (without validation)."""
    start = {"radius": float(rng.choice(config.radii)), "azimuth_deg": float(rng.uniform(-180, 180)),
             "pitch_deg": float(rng.uniform(*config.pitch_deg)),
             "target": [float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-1.4, -0.6)),
                        float(rng.uniform(-0.4, 0.4))]}
    params = {"start": start, "focal_mm": float(rng.choice(config.focal_mm)),
              "ease_a": 0.0 if rng.random() < 0.5 else float(rng.choice([-1, 1]) * rng.uniform(1, 5))}
    sgn = lambda: float(rng.choice([-1.0, 1.0]))  # noqa: E731
    if config.moves:  # a restricted world: its own moves and ranges
        kind, name = "basic", str(rng.choice(config.moves))
        if config.constant_speed:
            params["ease_a"] = 0.0
    else:
        names, weights = zip(*config.kind_weights)
        kind = rng.choice(names, p=np.asarray(weights) / np.sum(weights))
        name = str(rng.choice(BASIC_MOVES)) if kind == "basic" else str(kind)
    if name == "static":
        return "static", params
    if kind == "basic":
        if name in ("pan", "tilt"):
            params["angle_deg"] = sgn() * float(rng.uniform(*config.angle_deg))
        elif name == "roll":
            params["angle_deg"] = sgn() * float(rng.uniform(*config.roll_deg))
        else:
            params["distance_m"] = sgn() * float(rng.uniform(0.5, config.max_travel))
        return name, params
    if kind == "arc":
        params.update(angle_deg=sgn() * float(rng.uniform(10, 75)), pivot_distance_m=start["radius"],
                      elevation_deg=sgn() * float(rng.uniform(5, 15)),
                      roll_deg=sgn() * float(rng.uniform(5, 15)) if rng.random() < 0.5 else 0.0)
        return "orbit", params
    k = int(rng.integers(2, 5))
    multi = bool(rng.random() < 0.5)
    pts = np.concatenate([np.zeros((1, 3)), rng.uniform(-1, 1, (k - 1, 3))]) * [1.0, 0.4, 1.0]
    pts *= config.max_travel / max(np.linalg.norm(pts, axis=1).max(), 1e-6) * rng.uniform(0.3, 0.9)
    ang = rng.uniform(-30, 30, (k, 3)) * ([1, 0.5, 0.3] if multi else [1, 0, 0])
    ang[0] = 0.0
    params.update(keypoints=pts.round(4).tolist(), keyangles_deg=ang.round(3).tolist(), multi_axis=multi)
    return "spline", params


def sample_trajectory(rng, num_frames, aspect, config=TrajectoryConfig(), max_tries=100):
    """Draws one valid trajectory (resampling rule parameters until `check_trajectory` passes)."""
    for _ in range(max_tries):
        name, params = _sample_params(rng, config)
        traj = build_trajectory(name, params, num_frames, aspect)
        if not check_trajectory(traj.c2w, config):
            return traj
    raise RuntimeError(f"no valid trajectory after {max_tries} tries; the config is too tight")


def sample_group_trajectories(rng, num_frames, aspect, count=10, config=TrajectoryConfig()):
    """The `count` trajectories that every location of a group shares (10 in the paper)."""
    return [sample_trajectory(rng, num_frames, aspect, config) for _ in range(count)]


# ----------------------------------------------------------------------------- RealEstate10K
def to_realestate10k(c2w, intrinsics, timestamps_us):
    """Rows [F, 19] float64: timestamp, fx fy cx cy (normalised), 0 0, w2c 3x4 row-major.

    The converters invert with a general float64 4x4 inverse (not the rigid R^T shortcut), so
    c2w -> rows -> c2w is exact to float64 rounding (~1e-15) even for rotations that were rounded
    to float32 and are orthonormal only to ~1e-7.
    """
    c2w = np.asarray(c2w, np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"c2w must be [F, 4, 4], got {c2w.shape}")
    intrinsics = np.asarray(intrinsics, np.float64).reshape(len(c2w), 4)
    w2c = np.linalg.inv(c2w)[:, :3, :].reshape(len(c2w), 12)  # [F, 12], general inverse: see below
    ts = np.asarray(timestamps_us, np.float64).reshape(len(c2w), 1)
    return np.concatenate([ts, intrinsics, np.zeros((len(c2w), 2)), w2c], axis=1)  # [F, 19]


def from_realestate10k(rows):
    """Inverse of `to_realestate10k`: returns (timestamps_us int64 [F], intrinsics [F, 4],
    c2w [F, 4, 4] float64)."""
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or rows.shape[1] != 19:
        raise ValueError(f"RealEstate10K rows must be [F, 19], got {rows.shape}")
    w2c = np.tile(np.eye(4), (len(rows), 1, 1))
    w2c[:, :3, :] = rows[:, 7:].reshape(-1, 3, 4)
    return rows[:, 0].astype(np.int64), rows[:, 1:5].copy(), np.linalg.inv(w2c)


def format_realestate10k(header, rows):
    """Text of a RealEstate10K pose file: a header line (source id or URL), then one row per
    frame; floats are written with 17 significant digits so parsing them back is exact."""
    lines = [str(header)]
    for r in np.asarray(rows, np.float64):
        lines.append(" ".join([str(int(r[0]))] + [repr(float(v)) for v in r[1:]]))
    return "\n".join(lines) + "\n"


def parse_realestate10k(text):
    """Parses RealEstate10K pose text into (header, rows [F, 19] float64)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty RealEstate10K pose text")
    try:
        rows = np.array([[float(v) for v in ln.split()] for ln in lines[1:]], np.float64)
    except ValueError as e:
        raise ValueError(f"malformed RealEstate10K row: {e}") from None
    if rows.ndim != 2 or rows.shape[1] != 19:
        raise ValueError(f"RealEstate10K rows must have 19 numbers each, got shape {rows.shape}")
    return lines[0], rows
