"""Procedural scenes for the synthetic Camera Clone Dataset, and their captions.

A scene is one *location*: a textured ground, walls and ceiling (kind "indoor_room", a large hall)
or an open sky (kind "outdoor_field"), 8-16 objects at different depths (furniture, crates,
pillars, lamps; trees, rocks, houses, posts) with procedural textures, the animated subject of
`subject.py` near the origin of the location frame, and a day or night palette (sun or moon, sky
colours, a lamp, fog). Objects are placed clear of the group's camera paths and of the lines of
sight from the cameras' start points to the subject. The location frame is placed in the world by
an anchor pose (a yaw and an offset), so the four locations of a group have different absolute
poses while sharing the trajectories' relative ones.

`Scene.arrays` is a dict of fixed-shape numpy arrays (MAX_PLANES planes, MAX_BOXES yawed boxes,
MAX_SPHERES static spheres, NUM_SPHERES subject spheres per frame, one material row per
primitive in that order, and the lights), so the renderer compiles once per video shape.
"""
import dataclasses
import math

import numpy as np

from camclone_jax.data.synthetic import subject as subject_lib

MAX_PLANES, MAX_BOXES, MAX_SPHERES = 6, 16, 12
NUM_PRIMITIVES = MAX_PLANES + MAX_BOXES + MAX_SPHERES + subject_lib.NUM_SPHERES
TEXTURES = ("flat", "checker", "stripes", "noise", "bricks", "tiles")
KINDS = ("indoor_room", "outdoor_field")
PALETTES = ("day", "night")
ROOM_HALF, ROOM_HEIGHT = 11.0, 7.5
COLORS = {
    "red": (0.75, 0.15, 0.12), "orange": (0.9, 0.5, 0.1), "yellow": (0.9, 0.8, 0.2),
    "green": (0.2, 0.6, 0.2), "teal": (0.1, 0.55, 0.55), "blue": (0.15, 0.3, 0.8),
    "purple": (0.5, 0.2, 0.65), "pink": (0.9, 0.5, 0.6), "white": (0.88, 0.88, 0.85),
    "grey": (0.5, 0.5, 0.52), "brown": (0.45, 0.28, 0.15), "black": (0.12, 0.12, 0.13),
}


@dataclasses.dataclass
class Scene:
    """A location: render arrays (world frame), anchor c2w of its location frame, description."""
    arrays: dict
    anchor: np.ndarray
    description: dict
    caption: str


class SceneBuilder:
    """Collects primitives in the location frame and packs them into fixed-shape arrays."""

    def __init__(self):
        self.planes, self.boxes, self.spheres, self.objects = [], [], [], []

    @staticmethod
    def _material(color_a, color_b, texture, scale):
        return (np.asarray(color_a, np.float64), np.asarray(color_b, np.float64),
                TEXTURES.index(texture), float(scale))

    def add_plane(self, normal, offset, color_a, color_b=None, texture="flat", scale=1.0):
        """A one-sided plane {x : normal . x = offset}, visible from the side `normal` points to."""
        if len(self.planes) == MAX_PLANES:
            raise ValueError(f"at most {MAX_PLANES} planes per scene")
        mat = self._material(color_a, color_a if color_b is None else color_b, texture, scale)
        self.planes.append((np.asarray(normal, np.float64), float(offset), mat))

    def add_box(self, center, half, yaw=0.0, color_a=(0.5,) * 3, color_b=None, texture="flat",
                scale=1.0):
        """A box with half extents `half` [3], rotated by `yaw` radians about the vertical axis."""
        if len(self.boxes) == MAX_BOXES:
            raise ValueError(f"at most {MAX_BOXES} boxes per scene")
        mat = self._material(color_a, color_a if color_b is None else color_b, texture, scale)
        self.boxes.append((np.asarray(center, np.float64), np.asarray(half, np.float64), yaw, mat))

    def add_sphere(self, center, radius, color_a=(0.5,) * 3, color_b=None, texture="flat", scale=1.0):
        """A static sphere."""
        if len(self.spheres) == MAX_SPHERES:
            raise ValueError(f"at most {MAX_SPHERES} static spheres per scene")
        mat = self._material(color_a, color_a if color_b is None else color_b, texture, scale)
        self.spheres.append((np.asarray(center, np.float64), float(radius), mat))

    def build(self, lights, subject_centres=None, subject_radii=None, subject_materials=None,
              anchor=np.eye(4), num_times=1):
        """Packs everything into world-frame arrays; `anchor` is the location frame's c2w."""
        k = subject_lib.NUM_SPHERES
        rot, off = np.asarray(anchor)[:3, :3], np.asarray(anchor)[:3, 3]
        to_world = lambda p: np.asarray(p) @ rot.T + off  # noqa: E731
        yaw0 = math.atan2(rot[0, 2], rot[2, 2])
        null_mat = (np.zeros(3), np.zeros(3), 0, 1.0)
        planes = self.planes + [(np.array([0.0, -1.0, 0.0]), 0.0, null_mat)] * (
            MAX_PLANES - len(self.planes))
        boxes = self.boxes + [(np.zeros(3), np.zeros(3), 0.0, null_mat)] * (MAX_BOXES - len(self.boxes))
        spheres = self.spheres + [(np.zeros(3), 0.0, null_mat)] * (MAX_SPHERES - len(self.spheres))
        if subject_centres is None:
            subject_centres, subject_radii = np.zeros((num_times, k, 3)), np.zeros(k)
            subject_materials = [null_mat] * k
        normals = np.stack([p[0] for p in planes]) @ rot.T  # [P, 3]
        mats = ([p[2] for p in planes] + [b[3] for b in boxes] + [s[2] for s in spheres]
                + list(subject_materials))
        arrays = {
            "plane_normal": normals,
            "plane_offset": np.array([p[1] for p in planes]) + normals @ off,  # [P]
            "plane_on": np.arange(MAX_PLANES) < len(self.planes),
            "box_center": to_world(np.stack([b[0] for b in boxes])),  # [B, 3]
            "box_half": np.stack([b[1] for b in boxes]),  # [B, 3]
            "box_yaw": np.array([b[2] for b in boxes]) + yaw0,  # [B]
            "box_on": np.arange(MAX_BOXES) < len(self.boxes),
            "sphere_center": to_world(np.stack([s[0] for s in spheres])),  # [S, 3]
            "sphere_radius": np.array([s[1] for s in spheres]),  # [S]
            "subject_center": to_world(subject_centres),  # [T, K, 3]
            "subject_radius": np.asarray(subject_radii, np.float64),  # [K]
            "color_a": np.stack([m[0] for m in mats]), "color_b": np.stack([m[1] for m in mats]),  # [M, 3]
            "texture": np.array([m[2] for m in mats], np.int32),  # [M]
            "tex_scale": np.array([m[3] for m in mats]),  # [M]
            "tex_rot": rot, "tex_off": off,  # planes are textured in the location frame
        }
        for name, value in lights.items():
            value = np.asarray(value, np.float64)
            if name == "sun_dir":
                value = value @ rot.T
            elif name == "lamp_pos":
                value = to_world(value)
            arrays[name] = value
        return {k_: (v.astype(np.float32) if v.dtype == np.float64 else v) for k_, v in arrays.items()}


def make_lights(palette, kind, rng):
    """Light and sky parameters of a palette ('day' or 'night'), in the location frame."""
    az, el = rng.uniform(0, 2 * np.pi), math.radians(rng.uniform(25, 65))
    sun_dir = [math.cos(el) * math.sin(az), -math.sin(el), math.cos(el) * math.cos(az)]  # towards light
    lamp = [rng.uniform(-2, 2), -rng.uniform(3.0, 4.5), rng.uniform(-2, 2)]
    if palette == "day":
        return dict(sun_dir=sun_dir, sun_color=[1.0, 0.95, 0.85], ambient=[0.38, 0.4, 0.45],
                    lamp_pos=lamp, lamp_color=[0.0, 0.0, 0.0], sky_top=[0.25, 0.45, 0.85],
                    sky_horizon=[0.75, 0.85, 0.95], fog_color=[0.75, 0.82, 0.9],
                    fog_density=0.004 if kind == "outdoor_field" else 0.0, night=0.0)
    return dict(sun_dir=sun_dir, sun_color=[0.35, 0.4, 0.6], ambient=[0.14, 0.15, 0.22],
                lamp_pos=lamp, lamp_color=[1.6, 1.25, 0.8], sky_top=[0.01, 0.02, 0.06],
                sky_horizon=[0.08, 0.1, 0.2], fog_color=[0.06, 0.07, 0.12],
                fog_density=0.01 if kind == "outdoor_field" else 0.0, night=1.0)


def _color(rng, exclude=()):
    name = str(rng.choice([c for c in COLORS if c not in exclude]))
    return name, np.array(COLORS[name])


_OBJECTS = {  # the objects each kind of scene draws from (sizes in `_add_object`, in metres)
    "indoor_room": ("table", "shelf", "pillar", "crate", "ball", "lamp", "sofa"),
    "outdoor_field": ("tree", "rock", "house", "post", "crate", "hay bale", "ball"),
}


def _add_object(b, name, rng, pos, yaw):
    """Adds one named object at ground position pos (x, z); returns (footprint radius, colour)."""
    cname, col = _color(rng)
    tex = str(rng.choice(["checker", "stripes", "noise", "bricks"]))
    dark = col * 0.55
    x, z = pos
    if name in ("table", "crate", "shelf", "sofa", "house", "hay bale", "pillar", "post"):
        half = {"table": (rng.uniform(0.6, 1.0), 0.38, rng.uniform(0.4, 0.6)),
                "crate": (rng.uniform(0.3, 0.6),) * 3,
                "shelf": (rng.uniform(0.5, 1.0), rng.uniform(0.8, 1.3), 0.22),
                "sofa": (rng.uniform(0.8, 1.2), 0.4, 0.45), "hay bale": (0.7, 0.45, 0.5),
                "house": (rng.uniform(2, 4), rng.uniform(1.5, 3), rng.uniform(2, 4)),
                "pillar": (0.3, ROOM_HEIGHT / 2, 0.3), "post": (0.12, rng.uniform(0.8, 1.5), 0.12)}[name]
        if name == "hay bale":
            cname, tex = "yellow", "stripes"
            col, dark = np.array(COLORS["yellow"]), np.array(COLORS["brown"])
        b.add_box((x, -half[1], z), half, yaw, col, dark, tex, rng.uniform(0.15, 0.5) * max(1, half[0]))
        return float(np.hypot(half[0], half[2])), cname
    if name in ("ball", "rock"):
        r = rng.uniform(0.2, 0.5) if name == "ball" else rng.uniform(0.4, 1.2)
        if name == "rock":
            cname, col = "grey", np.array(COLORS["grey"]) * rng.uniform(0.8, 1.2)
        b.add_sphere((x, -r * (1.0 if name == "ball" else 0.6), z), r, col, dark, tex, r * 0.5)
        return r, cname
    if name == "tree":
        h = rng.uniform(1.5, 3.0)
        bark = np.array(COLORS["brown"])
        b.add_box((x, -h / 2, z), (0.15, h / 2, 0.15), yaw, bark, bark * 0.6, "stripes", 0.2)
        r = rng.uniform(0.9, 1.6)
        green = np.array(COLORS["green"]) * rng.uniform(0.7, 1.2)
        b.add_sphere((x, -h - r * 0.8, z), r, green, green * 0.5, "noise", 0.4)
        return r, "green"
    if name == "lamp":
        b.add_box((x, -0.9, z), (0.05, 0.9, 0.05), 0.0, COLORS["black"], None, "flat", 1.0)
        b.add_sphere((x, -2.0, z), 0.25, COLORS["white"], COLORS["yellow"], "stripes", 0.1)
        return 0.3, "white"
    raise ValueError(f"unknown object {name!r}")


def _clear(pos, radius, avoid_xz, segments, placed):
    """True if a footprint circle misses the camera paths, the sight lines and placed objects."""
    if np.hypot(*pos) < radius + 1.6:
        return False
    if avoid_xz.size and np.linalg.norm(avoid_xz - pos, axis=1).min() < radius + 0.6:
        return False
    for a in segments:  # sight line from a camera start to the subject at the origin
        t = np.clip(np.dot(pos, a) / max(np.dot(a, a), 1e-9), 0.0, 1.0)
        if np.linalg.norm(pos - t * a) < radius + 0.4:
            return False
    return all(np.hypot(*(pos - q)) > radius + r + 0.2 for q, r in placed)


def make_scene(rng, num_frames, fps, camera_centres=np.zeros((0, 3)), camera_starts=np.zeros((0, 3)),
               kind=None, palette=None):
    """Draws one location. camera_centres [N, 3]: every camera centre of the group (location
    frame) that objects must avoid; camera_starts [C, 3]: start points whose sight lines to the
    subject stay clear. Returns a `Scene`."""
    kind = kind or str(rng.choice(KINDS))
    palette = palette or str(rng.choice(PALETTES))
    if kind not in KINDS or palette not in PALETTES:
        raise ValueError(f"unknown scene kind/palette {kind!r}/{palette!r}")
    b, desc = SceneBuilder(), {"kind": kind, "palette": palette}
    if kind == "indoor_room":
        floor_tex = str(rng.choice(["tiles", "checker", "stripes"]))
        wall_tex = str(rng.choice(["bricks", "stripes", "noise"]))
        (fc, fcol), (wc, wcol) = _color(rng, ("black",)), _color(rng, ("black",))
        b.add_plane((0, -1, 0), 0.0, fcol, fcol * 0.55, floor_tex, rng.uniform(0.6, 1.2))
        b.add_plane((0, 1, 0), -ROOM_HEIGHT, (0.8, 0.8, 0.78), (0.6, 0.6, 0.6), "tiles", 2.0)
        for normal in ((1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -1)):
            b.add_plane(normal, -ROOM_HALF, wcol, wcol * 0.6, wall_tex, rng.uniform(0.5, 1.0))
        wall_word = {"bricks": "brick", "stripes": "striped", "noise": "marbled"}[wall_tex]
        floor_word = {"tiles": "tiled", "checker": "checkered", "stripes": "striped"}[floor_tex]
        desc["place"] = f"a large indoor hall with {wc} {wall_word} walls and {_a(fc)} {floor_word} floor"
        reach = ROOM_HALF - 0.8
    else:
        ground = str(rng.choice(["grass", "paved", "dirt"]))
        col, tex = {"grass": (COLORS["green"], "noise"), "paved": (COLORS["grey"], "tiles"),
                    "dirt": (COLORS["brown"], "noise")}[ground]
        b.add_plane((0, -1, 0), 0.0, np.array(col) * 0.9, np.array(col) * 0.55, tex, rng.uniform(0.4, 1.0))
        desc["place"] = f"an open {ground} field"
        reach = 28.0
    avoid_xz = np.asarray(camera_centres)[:, [0, 2]]
    segments = list(np.asarray(camera_starts)[:, [0, 2]])
    placed, objects = [], []
    n_objects = int(rng.integers(8, 15) if kind == "indoor_room" else rng.integers(10, 17))
    for _ in range(200):
        if len(objects) == n_objects or len(b.boxes) > MAX_BOXES - 2 or len(b.spheres) > MAX_SPHERES - 2:
            break
        name = str(rng.choice(_OBJECTS[kind]))
        if name == "house" and rng.random() < 0.6:
            continue
        dist = rng.uniform(2.0, reach) if name != "house" else rng.uniform(14.0, reach)
        ang = rng.uniform(0, 2 * np.pi)
        pos = np.array([dist * math.sin(ang), dist * math.cos(ang)])
        if kind == "indoor_room":
            pos = np.clip(pos, -reach, reach)
        radius = {"house": 5.7, "tree": 1.6, "rock": 1.2, "table": 1.2, "sofa": 1.3,
                  "shelf": 1.05}.get(name, 0.85)  # an upper bound of the footprint
        if not _clear(pos, radius, avoid_xz, segments, placed):
            continue
        radius, cname = _add_object(b, name, rng, pos, float(rng.uniform(0, np.pi)))
        placed.append((pos, radius))
        objects.append({"name": name, "color": cname, "distance": float(np.hypot(*pos))})
    desc["objects"] = objects
    subj = subject_lib.sample_subject(rng)
    (tc, tcol), (bc, bcol) = _color(rng), _color(rng)
    top_tex = str(rng.choice(["flat", "stripes", "checker"]))
    skin = np.array(rng.choice([(0.95, 0.8, 0.65), (0.75, 0.55, 0.4), (0.45, 0.3, 0.2)]))
    part_mats = {"skin": (skin, skin, 0, 1.0), "top": (tcol, tcol * 0.5, TEXTURES.index(top_tex), 0.12),
                 "bottom": (bcol, bcol * 0.6, TEXTURES.index("noise"), 0.1),
                 "shoe": (np.array(COLORS["black"]),) * 2 + (0, 1.0)}
    centres, radii = subject_lib.subject_spheres(subj, np.arange(num_frames) / fps)
    top_word = {"flat": "plain", "stripes": "striped", "checker": "checkered"}[top_tex]
    desc["subject"] = dict(subj, top=f"{tc} {top_word}", bottom=bc)
    anchor_yaw = rng.uniform(-np.pi, np.pi)
    anchor = np.eye(4)
    anchor[:3, :3] = [[math.cos(anchor_yaw), 0, math.sin(anchor_yaw)], [0, 1, 0],
                      [-math.sin(anchor_yaw), 0, math.cos(anchor_yaw)]]
    anchor[[0, 2], 3] = rng.uniform(-50, 50, 2)
    arrays = b.build(make_lights(palette, kind, rng), centres, radii,
                     [part_mats[p] for p in subject_lib.PARTS], anchor, num_frames)
    return Scene(arrays, anchor, desc, caption_from_description(desc))


REFERENCE_KINDS = ("indoor", "outdoor")


def make_reference_scene(rng, kind, camera_centres=np.zeros((0, 3))):
    """A neutral location for camera references (`camera_ref.py`): no subject, daylight, and fine
    high-contrast texture everywhere (a checkered floor or ground with per-cell tints, brick
    walls) on objects at many depths, from 1 m beside the camera path out to the walls, so that
    any camera move shows parallax and trackable corners. `kind` is one of REFERENCE_KINDS;
    camera_centres [N, 3] (location frame) is the path that objects keep clear of. Indoors the
    room grows to hold the path (walls at least 3 m beyond it, 8 m from the centre). The anchor
    is the identity: the location frame is the world frame."""
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference scene {kind!r}; expected one of {REFERENCE_KINDS}")
    centres = np.asarray(camera_centres, np.float64).reshape(-1, 3)  # [N, 3]
    path_reach = float(np.abs(centres[:, [0, 2]]).max(initial=0.0))
    path_top = float(-centres[:, 1].min(initial=0.0))  # the highest camera, metres above ground
    b = SceneBuilder()
    (fc, fcol), (wc, wcol) = _color(rng, ("black", "white")), _color(rng, ("black",))
    if kind == "indoor":
        half, height = max(6.0, path_reach + 3.0), max(ROOM_HEIGHT, path_top + 2.0)
        b.add_plane((0, -1, 0), 0.0, fcol, fcol * 0.35, "checker", 0.5)
        b.add_plane((0, 1, 0), -height, (0.8, 0.8, 0.78), (0.45, 0.45, 0.45), "tiles", 1.0)
        for normal in ((1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -1)):
            b.add_plane(normal, -half, wcol, wcol * 0.45, "noise", 0.6)
        names, reach = _OBJECTS["indoor_room"], half - 0.8
        place = f"an indoor hall with {wc} brick walls and {_a(fc)} checkered floor"
    else:
        b.add_plane((0, -1, 0), 0.0, fcol, fcol * 0.35, "checker", 0.8)
        names, reach = _OBJECTS["outdoor_field"], max(20.0, path_reach + 10.0)
        place = f"an open field with {_a(fc)} checkered ground"
    avoid_xz, placed, objects = centres[:, [0, 2]], [], []
    for _ in range(300):
        if len(b.boxes) > MAX_BOXES - 2 or len(b.spheres) > MAX_SPHERES - 2:
            break
        name = str(rng.choice(names))
        dist, ang = rng.uniform(1.0, reach), rng.uniform(0, 2 * np.pi)
        pos = np.clip([dist * math.sin(ang), dist * math.cos(ang)], -reach, reach)
        radius = {"house": 5.7, "tree": 1.6, "rock": 1.2, "table": 1.2, "sofa": 1.3,
                  "shelf": 1.05}.get(name, 0.85)  # an upper bound of the footprint
        if not _clear(pos, radius, avoid_xz, [], placed):
            continue
        radius, cname = _add_object(b, name, rng, pos, float(rng.uniform(0, np.pi)))
        placed.append((pos, radius))
        objects.append({"name": name, "color": cname, "distance": float(np.hypot(*pos))})
    desc = {"kind": kind, "palette": "day", "place": place, "objects": objects}
    arrays = b.build(make_lights("day", kind, rng))
    return Scene(arrays, np.eye(4), desc, f"A camera reference: {place} in daylight.")


def _a(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption_from_description(desc):
    """An English caption of a scene description (subject, action, place, time, nearby objects)."""
    s = desc["subject"]
    who = f"A figure in {_a(s['top'])} top and {s['bottom']} trousers"
    when = "in daylight" if desc["palette"] == "day" else "at night"
    text = f"{who} {subject_lib.ANIMATIONS[s['animation']]} in {desc['place']} {when}."
    near = sorted(desc["objects"], key=lambda o: o["distance"])[:3]
    if near:
        names = [_a(f"{o['color']} {o['name']}") for o in near]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        text += f" Nearby are {joined}."
    return text
