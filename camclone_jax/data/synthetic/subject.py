"""The moving subject: a figure made of 12 spheres with a simple procedural animation.

The paper puts one of 66 animated characters (running, dancing, ...) at every location. Ours is a
sphere-built figure (head with a nose that shows where it faces, chest, hips, elbows, hands, knees,
feet) about 1.6 m tall, standing on the ground (y = 0, +y down) of the location frame and staying
within ~1 m of its origin, so the cameras (kept >= 1.8 m away by the trajectory rules) never touch
it. Animations: walk and run on a circle, dance, jump, wave and spin. Joint positions are computed
on the host in numpy for every frame time; the renderer only sees sphere centres.
"""
import math

import numpy as np

from camclone_jax.data.synthetic.trajectories import rot_y

NUM_SPHERES = 12
# name, rest position in the body frame (x right, y down, z forward; feet on y = 0), radius, part
_JOINTS = (
    ("head", (0.0, -1.50, 0.0), 0.13, "skin"), ("nose", (0.0, -1.50, 0.12), 0.04, "shoe"),
    ("chest", (0.0, -1.22, 0.0), 0.19, "top"), ("hips", (0.0, -0.86, 0.0), 0.17, "bottom"),
    ("l_elbow", (-0.25, -1.05, 0.0), 0.065, "top"), ("r_elbow", (0.25, -1.05, 0.0), 0.065, "top"),
    ("l_hand", (-0.27, -0.80, 0.02), 0.06, "skin"), ("r_hand", (0.27, -0.80, 0.02), 0.06, "skin"),
    ("l_knee", (-0.10, -0.47, 0.0), 0.085, "bottom"), ("r_knee", (0.10, -0.47, 0.0), 0.085, "bottom"),
    ("l_foot", (-0.10, -0.08, 0.04), 0.08, "shoe"), ("r_foot", (0.10, -0.08, 0.04), 0.08, "shoe"),
)
JOINT_NAMES = tuple(j[0] for j in _JOINTS)
PARTS = tuple(j[3] for j in _JOINTS)
ANIMATIONS = {
    "walk": "walks in a circle", "run": "runs in a circle", "dance": "dances",
    "jump": "jumps up and down", "wave": "waves a hand", "spin": "spins around with arms out",
}


def _index(name):
    return JOINT_NAMES.index(name)


def _pose_offsets(animation, phase, t, p):
    """Body-frame joint offsets [K, 3] and the root lift (metres, up > 0) at one time."""
    rest = np.array([j[1] for j in _JOINTS], np.float64)  # [K, 3]
    off = rest.copy()
    s, lift = math.sin(phase), 0.0
    if animation in ("walk", "run"):
        amp = 0.22 if animation == "walk" else 0.38
        for side, sgn in (("l", 1.0), ("r", -1.0)):
            off[_index(f"{side}_foot"), 2] += sgn * amp * s
            off[_index(f"{side}_knee"), 2] += sgn * 0.6 * amp * s
            off[_index(f"{side}_hand"), 2] -= sgn * amp * s
            off[_index(f"{side}_elbow"), 2] -= sgn * 0.5 * amp * s
        lift = (0.03 if animation == "walk" else 0.08) * abs(s)
    elif animation == "dance":
        off[:, 0] += 0.08 * s * (-off[:, 1] / 1.5)  # sway, more at the top
        for side, sgn in (("l", 1.0), ("r", -1.0)):
            up = 0.5 + 0.5 * math.sin(phase + (0 if sgn > 0 else math.pi))
            off[_index(f"{side}_hand"), 1] = -0.8 - 1.0 * up
            off[_index(f"{side}_hand"), 0] = -sgn * (0.27 + 0.15 * up)
            off[_index(f"{side}_elbow"), 1] = -1.05 - 0.4 * up
        lift = 0.05 * abs(math.sin(2 * phase))
    elif animation == "jump":
        air = abs(math.sin(0.5 * phase))
        lift = 0.45 * air
        for side in ("l", "r"):
            off[_index(f"{side}_hand"), 1] = -0.8 - 0.9 * air
            off[_index(f"{side}_elbow"), 1] = -1.05 - 0.35 * air
            off[_index(f"{side}_knee"), 2] += 0.12 * (1 - air)
    elif animation == "wave":
        off[_index("r_elbow")] = (0.32, -1.38, 0.05)
        off[_index("r_hand")] = (0.32 + 0.16 * s, -1.72, 0.05)
    elif animation == "spin":
        for side, sgn in (("l", -1.0), ("r", 1.0)):
            off[_index(f"{side}_elbow")] = (sgn * 0.42, -1.25, 0.0)
            off[_index(f"{side}_hand")] = (sgn * 0.7, -1.27, 0.0)
    else:
        raise ValueError(f"unknown animation {animation!r}; expected one of {tuple(ANIMATIONS)}")
    return off * p["scale"], lift * p["scale"]


def sample_subject(rng):
    """Draws the subject's animation and its parameters (JSON-serialisable)."""
    animation = str(rng.choice(list(ANIMATIONS)))
    fast = animation == "run"
    return {
        "animation": animation, "scale": float(rng.uniform(0.85, 1.15)),
        "frequency_hz": float(rng.uniform(1.4, 2.2) if fast else rng.uniform(0.7, 1.3)),
        "circle_radius_m": float(rng.uniform(0.5, 1.0)), "speed_mps": float(
            rng.uniform(1.6, 2.4) if fast else rng.uniform(0.6, 1.0)),
        "direction": float(rng.choice([-1.0, 1.0])), "start_angle": float(rng.uniform(0, 2 * np.pi)),
        "heading": float(rng.uniform(0, 2 * np.pi)), "spin_rate": float(rng.uniform(1.5, 3.0)),
    }


def subject_spheres(params, times):
    """Sphere centres [T, K, 3] (location frame) at `times` [T] seconds and radii [K]."""
    anim, centres = params["animation"], []
    for t in np.asarray(times, np.float64):
        phase = 2 * math.pi * params["frequency_hz"] * t
        if anim in ("walk", "run"):
            rho, d = params["circle_radius_m"], params["direction"]
            ang = params["start_angle"] + d * params["speed_mps"] * t / rho
            root = np.array([rho * math.sin(ang), 0.0, rho * math.cos(ang)])
            heading = math.atan2(d * math.cos(ang), -d * math.sin(ang))  # along the circle's tangent
        else:
            root = np.zeros(3)
            heading = params["heading"] + (params["spin_rate"] * t if anim == "spin" else 0.0)
            if anim == "dance":
                heading += 0.6 * math.sin(0.5 * phase)
        off, lift = _pose_offsets(anim, phase, t, params)  # [K, 3]
        centres.append(root + off @ rot_y(heading).T - np.array([0.0, lift, 0.0]))
    radii = np.array([j[2] for j in _JOINTS]) * params["scale"]  # [K]
    return np.stack(centres), radii  # [T, K, 3], [K]
