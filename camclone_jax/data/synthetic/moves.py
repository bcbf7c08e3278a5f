"""Camera moves in plain words, and edits of a camera path: the shot list of a camera reference.

  parse_move("dolly in 1 m, then pan left 20 deg easing out", num_frames, aspect) -> Move
  apply_edits(c2w, parse_edit("reversed, slower 2")) -> c2w

Words map onto the trajectory vocabulary of `trajectories.py` (each move is one of its
trajectories, built by `build_trajectory`, so its axes and signs are the dataset's):

  pan left|right A, tilt up|down A, roll clockwise|counterclockwise A   (A in deg, default unit)
  truck left|right D, pedestal up|down D, dolly in|out D                (D in m or cm, default m)
  orbit left|right A [around D m] [while rising|descending A]           (around the target point)
  hold (or: stay still, static, pause)

Verbs may be written as the captions write them ("pans right 42 deg", "dollys in 1.0 m").
Clauses separated by commas, semicolons, full stops or "then" run one after another, each over
an equal share of the frames; parts joined by "and", "while" or "+" run at once (their motions,
taken from the clause's start pose, compose: translations along the start's axes, then turns).
Modifiers: "at constant speed", "easing out" / "slowing down" (starts fast), "easing in" /
"speeding up" (ends fast), each optionally with a strength ("easing out 5", default 3; the
profile of `trajectories.speed_profile`), apply to their clause or, on their own, to the clause
before; "with a 35 mm lens" sets the lens of the whole move (default DEFAULT_FOCAL_MM). So a
caption of the dataset (`Trajectory.describe()`) parses back into its trajectory.

Edits of a path c2w [F, 4, 4] (relative to its first frame; the result is too):
  slower [X]   X times slower (default 2): the same frames cover the first 1/X of the path
  faster [X]   X times faster: past its end the path continues by repeating itself (a pan keeps
               panning, a dolly keeps going), so the frames still show a moving camera
  reversed     played backwards; mirrored: left and right swapped (pan, truck, roll, orbit
               flip; tilt, pedestal and dolly stay); scaled X: translations times X
Poses between frames are interpolated: positions linearly, rotations by slerp.
"""
import dataclasses
import math
import re

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from camclone_jax.data.synthetic import trajectories as traj_lib

DEFAULT_FOCAL_MM = 24.0
DEFAULT_EASE = 3.0
# where a reference camera starts (location frame): 4.5 m from a point 1 m above the centre
REFERENCE_START = {"radius": 4.5, "azimuth_deg": 0.0, "pitch_deg": 15.0, "target": [0.0, -1.0, 0.0]}

_VERBS = {
    "pan": ("pan", "pans", "panning"), "tilt": ("tilt", "tilts", "tilting"),
    "roll": ("roll", "rolls", "rolling"), "truck": ("truck", "trucks", "trucking"),
    "pedestal": ("pedestal", "pedestals", "pedestaling", "pedestalling"),
    "dolly": ("dolly", "dollys", "dollies", "dollying"), "orbit": ("orbit", "orbits", "orbiting"),
    "static": ("hold", "holds", "holding", "stay", "stays", "static", "pause"),
}
VERB_OF = {word: name for name, words in _VERBS.items() for word in words}
DIRECTIONS = {  # move -> {word: sign}; the positive sign is the one `trajectories.py` uses
    "pan": {"right": 1, "left": -1}, "tilt": {"up": 1, "down": -1},
    "roll": {"clockwise": 1, "cw": 1, "counterclockwise": -1, "anticlockwise": -1, "ccw": -1},
    "truck": {"right": 1, "left": -1}, "pedestal": {"up": 1, "down": -1},
    "dolly": {"in": 1, "forward": 1, "forwards": 1, "out": -1, "back": -1, "backward": -1,
              "backwards": -1},
    "orbit": {"right": 1, "left": -1},
}
_ANGLE_UNITS = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": math.degrees(1.0)}
_LENGTH_UNITS = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0, "cm": 0.01}
_FILLER = {"the", "camera", "by", "a", "an", "of", "still", "to", "around", "subject", "target"}
_NUMBER = r"(\d+(?:\.\d+)?)"
_LENS = re.compile(rf"(?:with )?(?:an? )?{_NUMBER} ?mm lens")
_SPEED = re.compile(rf"(?:at )?constant speed|(easing out|ease out|slowing down|easing in|ease in"
                    rf"|speeding up)(?: {_NUMBER})?")
_ELEVATION = re.compile(rf"(?:while )?(rising|descending) {_NUMBER} ?(deg|degrees?|rad)?")
_PIVOT = re.compile(rf"around (?:a point )?{_NUMBER} ?(m|metres?|meters?|cm)(?: away)?")
_CLAUSES = re.compile(r"[,;\n]|(?<!\d)\.|\.(?!\d)|\bthen\b")
_PARTS = re.compile(r"\band\b|\bwhile\b|\+")


@dataclasses.dataclass(frozen=True)
class Move:
    """A camera path from words: segments (each a tuple of (name, params) run at once, one after
    another), c2w [F, 4, 4] in the location frame, normalised intrinsics [F, 4]."""
    segments: tuple
    c2w: np.ndarray
    intrinsics: np.ndarray

    def describe(self):
        """The move in words, e.g. 'The camera dollys in 1.0 m at constant speed, then pans left
        20 deg easing out, with a 24 mm lens.' (`parse_move` reads it back)."""
        clauses = []
        for seg in self.segments:
            ease = abs(seg[0][1].get("ease_a", 0.0))
            strength = f" {ease:g}" if ease and ease != DEFAULT_EASE else ""
            clauses.append(" and ".join(traj_lib.describe_move(name, p) for name, p in seg)
                           + " " + traj_lib.describe_speed(seg[0][1]) + strength)
        focal = self.segments[0][0][1]["focal_mm"]
        return f"The camera {', then '.join(clauses)}, with a {focal:.0f} mm lens."


def _error(text, message):
    return ValueError(f"move {text!r}: {message}")


def _amount(words, kind, text, clause):
    """(value, the words left) from a clause's words: the one number, in deg or m by `kind`."""
    units = _ANGLE_UNITS if kind == "angle" else _LENGTH_UNITS
    other = _LENGTH_UNITS if kind == "angle" else _ANGLE_UNITS
    value, rest, i = None, [], 0
    while i < len(words):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", words[i])
        if not m:
            rest.append(words[i])
            i += 1
            continue
        if value is not None:
            raise _error(text, f"two amounts in {clause!r}; split it into clauses")
        unit = m.group(2) or (words[i + 1] if i + 1 < len(words) and
                              (words[i + 1] in units or words[i + 1] in other) else "")
        i += 1 if m.group(2) or not unit else 2
        if unit in other:
            want = "an angle (deg)" if kind == "angle" else "a distance (m)"
            raise _error(text, f"{clause!r} needs {want}, got {unit!r}")
        if unit and unit not in units:
            raise _error(text, f"unknown unit {unit!r} in {clause!r}; use {sorted(units)}")
        value = float(m.group(1)) * units.get(unit, 1.0)
    return value, rest


def _parse_part(part, text, clause):
    """(name, params) of one simple move like 'pan left 20 deg' (no speed, lens or start)."""
    words = part.replace("°", " deg").replace("counter-clockwise", "counterclockwise").split()
    words = [w for w in words if w not in _FILLER]
    moves = [w for w in words if w in VERB_OF]
    if len(moves) != 1:
        what = "no move" if not moves else f"{len(moves)} moves"
        raise _error(text, f"{what} in {part.strip()!r}; expected one of "
                           f"{', '.join(n for n in _VERBS if n != 'static')} or hold")
    name = VERB_OF[moves[0]]
    words.remove(moves[0])
    if name == "static":
        if words:
            raise _error(text, f"cannot read {' '.join(words)!r} in {clause!r}")
        return name, {}
    kind = "angle" if name in ("pan", "tilt", "roll", "orbit") else "distance"
    value, words = _amount(words, kind, text, clause)
    signs = [DIRECTIONS[name][w] for w in words if w in DIRECTIONS[name]]
    unknown = [w for w in words if w not in DIRECTIONS[name]]
    if unknown:
        raise _error(text, f"cannot read {' '.join(unknown)!r} in {clause!r}; {name} goes "
                           f"{' or '.join(DIRECTIONS[name])}")
    if value is None:
        example = f"{name} {next(iter(DIRECTIONS[name]))} {'20 deg' if kind == 'angle' else '1 m'}"
        raise _error(text, f"{part.strip()!r} has no amount, e.g. {example!r}")
    if len(signs) != 1:
        raise _error(text, f"{part.strip()!r} needs one direction: {' or '.join(DIRECTIONS[name])}")
    return name, {("angle_deg" if kind == "angle" else "distance_m"): signs[0] * value}


def _parse_clause(clause, text, start):
    """(parts [(name, params)], speed dict or None) of one clause; params without lens/start."""
    speed = None
    m = _SPEED.search(clause)
    if m:
        strength = float(m.group(2)) if m.group(2) else DEFAULT_EASE
        fast_first = m.group(1) in ("easing out", "ease out", "slowing down")
        speed = {"ease_a": 0.0 if m.group(1) is None else (strength if fast_first else -strength)}
        clause = clause[:m.start()] + clause[m.end():]
    extra, original = {}, clause.strip()
    m = _ELEVATION.search(clause)
    if m:
        elevation = float(m.group(2)) * _ANGLE_UNITS[m.group(3) or "deg"]
        extra["elevation_deg"] = elevation if m.group(1) == "rising" else -elevation
        clause = clause[:m.start()] + clause[m.end():]
    m = _PIVOT.search(clause)
    if m:
        extra["pivot_distance_m"] = float(m.group(1)) * _LENGTH_UNITS[m.group(2)]
        clause = clause[:m.start()] + clause[m.end():]
    parts = [_parse_part(p, text, clause.strip()) for p in _PARTS.split(clause) if p.strip()]
    for name, params in parts:
        if name == "orbit":
            params.update({"pivot_distance_m": start["radius"], "elevation_deg": 0.0,
                           "roll_deg": 0.0, **extra})
            extra = {}
    if extra:
        raise _error(text, f"'rising', 'descending' and 'around' belong to an orbit, in "
                           f"{original!r}")
    return parts, speed


def parse_shot_list(text, start=REFERENCE_START):
    """Segments [[(name, params), ...], ...] of a move in words (see the module docstring)."""
    low = text.lower().strip()
    if not low:
        raise ValueError("empty move; e.g. 'pan left 20 deg, then dolly in 1 m'")
    focal = None
    for m in _LENS.finditer(low):
        if focal is not None and float(m.group(1)) != focal:
            raise _error(text, "two different lenses; a move has one lens")
        focal = float(m.group(1))
    low = _LENS.sub(" ", low)
    segments = []
    for clause in _CLAUSES.split(low):
        clause = re.sub(r"^\s*(and|the camera|camera)\b", " ", clause).strip()
        if not clause:
            continue
        parts, speed = _parse_clause(clause, text, start)
        if not parts and speed is None:
            raise _error(text, f"cannot read {clause!r}")
        if not parts:
            if not segments:
                raise _error(text, f"{clause!r} comes before any move")
            parts = segments.pop()
        for _, params in parts:
            params.update({"start": start, "focal_mm": focal or DEFAULT_FOCAL_MM,
                           "ease_a": params.get("ease_a", 0.0), **(speed or {})})
        segments.append(parts)
    if not segments:
        raise _error(text, "no move in it")
    return segments


def build_move(segments, num_frames, aspect):
    """The `Move` of segments from `parse_shot_list`: segment k spans an equal share of the
    num_frames - 1 frame steps and starts where segment k - 1 ended."""
    steps = num_frames - 1
    if steps < len(segments):
        raise ValueError(f"{len(segments)} moves one after another need at least "
                         f"{len(segments) + 1} frames, got {num_frames}")
    c0 = traj_lib.start_pose(segments[0][0][1]["start"])  # [4, 4]
    poses = [c0[None]]
    for k, parts in enumerate(segments):
        n = steps // len(segments) + (k < steps % len(segments))  # frame steps of this segment
        motion = np.tile(np.eye(4), (n + 1, 1, 1))  # [n + 1, 4, 4]
        for name, params in parts:
            traj = traj_lib.build_trajectory(name, params, n + 1, aspect, c0=c0)
            motion = motion @ traj_lib.relative_to_first(traj.c2w)  # [n + 1, 4, 4]
        seg = c0[None] @ motion  # [n + 1, 4, 4]
        poses.append(seg[1:])
        c0 = seg[-1]
    c2w = np.concatenate(poses)  # [F, 4, 4]
    intr = traj_lib.intrinsics_from_focal(segments[0][0][1]["focal_mm"], aspect)  # [4]
    return Move(tuple(tuple(seg) for seg in segments), c2w.astype(np.float32),
                np.tile(intr, (num_frames, 1)).astype(np.float32))


def parse_move(text, num_frames, aspect, start=REFERENCE_START):
    """The `Move` of a shot list in words over num_frames frames of width / height `aspect`."""
    return build_move(parse_shot_list(text, start), num_frames, aspect)


# ----------------------------------------------------------------------------- edits of a path
def parse_edit(text):
    """[(edit, factor)] from words like 'reversed, slower 2' (see the module docstring)."""
    out = []
    for clause in re.split(r"[,;]|\bthen\b|\band\b", text.lower()):
        words = clause.split()
        if not words:
            continue
        m = re.fullmatch(r"(slower|faster|reversed?|mirrored|mirror|scaled?)"
                         r"(?: x? ?(\d+(?:\.\d+)?)x?)?", " ".join(words))
        if not m:
            raise ValueError(f"edit {text!r}: cannot read {clause.strip()!r}; expected one of "
                             "slower [X], faster [X], reversed, mirrored, scaled X")
        name = {"reverse": "reversed", "mirror": "mirrored", "scale": "scaled"}.get(m.group(1),
                                                                                 m.group(1))
        if name == "scaled" and m.group(2) is None:
            raise ValueError(f"edit {text!r}: 'scaled' needs a factor, e.g. 'scaled 0.5'")
        if name in ("reversed", "mirrored") and m.group(2) is not None:
            raise ValueError(f"edit {text!r}: {name!r} takes no factor")
        factor = float(m.group(2)) if m.group(2) else 2.0
        if factor <= 0:
            raise ValueError(f"edit {text!r}: the factor of {name!r} must be positive")
        out.append((name, factor))
    if not out:
        raise ValueError(f"edit {text!r}: no edit; expected slower, faster, reversed, mirrored "
                         "or scaled X")
    return out


def retime(c2w, times):
    """Poses [G, 4, 4] at fractional frame positions times [G] >= 0 of a path c2w [F, 4, 4]
    (relative to its first frame); past the last frame the path repeats itself from its end."""
    c2w = np.asarray(c2w, np.float64)
    last = len(c2w) - 1
    times = np.asarray(times, np.float64)
    if last == 0:
        return np.repeat(c2w, len(times), axis=0)
    laps = np.floor(times / last)  # [G] whole repeats before each time
    local = times - laps * last  # [G] in [0, last]
    slerp = Slerp(np.arange(last + 1), Rotation.from_matrix(c2w[:, :3, :3]))
    out = np.tile(np.eye(4), (len(times), 1, 1))  # [G, 4, 4]
    out[:, :3, :3] = slerp(local).as_matrix()
    for i in range(3):
        out[:, i, 3] = np.interp(local, np.arange(last + 1), c2w[:, i, 3])
    for lap in np.unique(laps):  # whole repeats: the end pose, lap times over
        end = np.linalg.matrix_power(c2w[-1], int(lap))
        out[laps == lap] = end[None] @ out[laps == lap]
    return out


def resample(c2w, num_frames):
    """The whole path c2w [F, 4, 4] retimed into num_frames poses (evenly spaced in time)."""
    return retime(c2w, np.linspace(0.0, len(c2w) - 1, num_frames))


def apply_edits(c2w, edits):
    """c2w [F, 4, 4] (relative to its first frame) after the edits of `parse_edit`, in order."""
    c2w = traj_lib.relative_to_first(c2w)  # [F, 4, 4]
    frames = np.arange(len(c2w), dtype=np.float64)
    for name, factor in edits:
        if name == "slower":
            c2w = retime(c2w, frames / factor)
        elif name == "faster":
            c2w = retime(c2w, frames * factor)
        elif name == "reversed":
            c2w = traj_lib.relative_to_first(c2w[::-1])
        elif name == "mirrored":
            flip = np.diag([-1.0, 1.0, 1.0, 1.0])
            c2w = flip[None] @ c2w @ flip[None]
        else:  # scaled
            c2w = c2w.copy()
            c2w[:, :3, 3] *= factor
    return c2w
