"""The structure of the Camera Clone Dataset: groups, locations, synchronized cameras, triplets.

As in the paper (section 4): every location is filmed by NUM_TRAJECTORIES (10) synchronized
cameras, each following one of ten trajectories; locations come in groups of NUM_LOCATIONS (4)
that share the same ten trajectories (the same poses in each location frame). A video is
identified by (group, location, trajectory); a triplet is

  target       video (g, l, k)
  camera_ref   (g, l', k) with l' != l   same trajectory, another location of the same group
  content_ref  (g, l, k') with k' != k   same location (same dynamic scene), another trajectory

so neither reference is ever the target. Each target has 3 x 9 = 27 possible triplets; we keep
`triplets_per_target` of them (3 by default, about the paper's 1.155M triplets / 391K videos),
cycling the camera reference over the other three locations.

Global ids: location_id = 4 g + l, trajectory_id = 10 g + k, video_id = 10 location_id + k, and
scene_id = location_id (every synthetic location is its own procedural scene). Every random
choice is seeded by (seed, group, ...) so a group's content does not depend on how many groups
are made.
"""
import dataclasses

import numpy as np

from camclone_jax.data.synthetic import render as render_lib
from camclone_jax.data.synthetic import scene as scene_lib
from camclone_jax.data.synthetic import trajectories as traj_lib

NUM_LOCATIONS = 4
NUM_TRAJECTORIES = 10
MAX_TRIPLETS_PER_TARGET = (NUM_LOCATIONS - 1) * (NUM_TRAJECTORIES - 1)


@dataclasses.dataclass(frozen=True)
class VideoKey:
    """One video of the dataset: `location` in [0, 4) and `trajectory` in [0, 10) of `group`."""
    group: int
    location: int
    trajectory: int

    @property
    def location_id(self):
        return self.group * NUM_LOCATIONS + self.location

    @property
    def trajectory_id(self):
        return self.group * NUM_TRAJECTORIES + self.trajectory

    @property
    def video_id(self):
        return self.location_id * NUM_TRAJECTORIES + self.trajectory

    @property
    def scene_id(self):
        return self.location_id

    def ids(self):
        """The record ids of this video (see camclone_jax.data.records)."""
        return {"scene_id": self.scene_id, "location_id": self.location_id,
                "trajectory_id": self.trajectory_id, "group_id": self.group, "video_id": self.video_id}

    def relpath(self, folder, ext):
        """Path relative to the dataset root, e.g. videos/group_00000/location_00001/camera_03.mp4."""
        return (f"{folder}/group_{self.group:05d}/location_{self.location_id:05d}/"
                f"camera_{self.trajectory:02d}.{ext}")


@dataclasses.dataclass(frozen=True)
class Triplet:
    """A training triplet of videos."""
    target: VideoKey
    camera_ref: VideoKey
    content_ref: VideoKey


def triplet_rule_violation(target, camera_ref, content_ref):
    """'' if the three id dicts (group_id, location_id, trajectory_id) obey the paper's triplet
    rule, else a description of the violation."""
    t, cam, con = target, camera_ref, content_ref
    if cam["group_id"] != t["group_id"] or con["group_id"] != t["group_id"]:
        return "references come from another group"
    if cam["trajectory_id"] != t["trajectory_id"]:
        return "camera reference does not share the target's trajectory"
    if cam["location_id"] == t["location_id"]:
        return "camera reference is at the target's location"
    if con["location_id"] != t["location_id"]:
        return "content reference is not at the target's location"
    if con["trajectory_id"] == t["trajectory_id"]:
        return "content reference shares the target's trajectory"
    return ""


def group_triplets(group, triplets_per_target, seed):
    """The triplets of one group: `triplets_per_target` per video, in a fixed order."""
    if not 1 <= triplets_per_target <= MAX_TRIPLETS_PER_TARGET:
        raise ValueError(f"triplets_per_target must be in [1, {MAX_TRIPLETS_PER_TARGET}], "
                         f"got {triplets_per_target}")
    rng = np.random.default_rng([seed, group, 2])
    out = []
    for loc in range(NUM_LOCATIONS):
        for k in range(NUM_TRAJECTORIES):
            other_locs = rng.permutation([x for x in range(NUM_LOCATIONS) if x != loc])
            other_trajs = rng.permutation([x for x in range(NUM_TRAJECTORIES) if x != k])
            for i in range(triplets_per_target):  # i -> (i % 3, (i // 3 + 3 (i % 3)) % 9) is 1:1
                a, b = i % 3, (i // 3 + 3 * (i % 3)) % 9
                out.append(Triplet(VideoKey(group, loc, k), VideoKey(group, int(other_locs[a]), k),
                                   VideoKey(group, loc, int(other_trajs[b]))))
    return out


@dataclasses.dataclass
class GroupPlan:
    """Everything needed to render one group: its 10 trajectories and 4 scenes."""
    group: int
    trajectories: list
    scenes: list


SCENE_STYLES = ("paper", "textured")


def plan_group(group, seed, num_frames, height, width, fps, config=traj_lib.TrajectoryConfig(),
               scenes="paper"):
    """Draws a group's shared trajectories (location frame) and its four locations' scenes:
    ``scenes="paper"`` the paper's locations (a subject, day or night, `scene.make_scene`),
    "textured" strongly textured daylight locations without a subject, indoors or out
    (`scene.make_reference_scene`: what a tiny model and a tiny camera measure can read)."""
    if scenes not in SCENE_STYLES:
        raise ValueError(f"scenes must be one of {SCENE_STYLES}, got {scenes!r}")
    trajs = traj_lib.sample_group_trajectories(np.random.default_rng([seed, group, 0]), num_frames,
                                               width / height, NUM_TRAJECTORIES, config)
    centres = np.concatenate([t.c2w[:, :3, 3] for t in trajs])  # [10 F, 3]
    starts = np.stack([t.c2w[0, :3, 3] for t in trajs])  # [10, 3]
    out = []
    for loc in range(NUM_LOCATIONS):
        rng = np.random.default_rng([seed, group, 1, loc])
        if scenes == "paper":
            out.append(scene_lib.make_scene(rng, num_frames, fps, centres, starts))
        else:
            kind = scene_lib.REFERENCE_KINDS[int(rng.integers(len(scene_lib.REFERENCE_KINDS)))]
            out.append(scene_lib.make_reference_scene(rng, kind, centres))
    return GroupPlan(group, trajs, out)


def world_poses(plan, location):
    """c2w [10, F, 4, 4] float32 in the world frame of `location`: anchor @ trajectory pose."""
    anchor = plan.scenes[location].anchor
    return np.stack([anchor[None] @ t.c2w.astype(np.float64) for t in plan.trajectories]).astype(np.float32)


def render_location(plan, location, height, width, supersample=2):
    """Renders the 10 synchronized videos of one location: uint8 [10, F, H, W, 3]."""
    c2w = world_poses(plan, location)  # [10, F, 4, 4]
    n, f = c2w.shape[:2]
    intr = np.stack([t.intrinsics for t in plan.trajectories])  # [10, F, 4]
    still = len(plan.scenes[location].arrays["subject_center"]) == 1  # no subject: one time
    times = np.tile(np.arange(f) * (not still), n)  # [10 F]: the cameras are synchronized
    frames, _ = render_lib.render(plan.scenes[location].arrays, c2w.reshape(n * f, 4, 4),
                                  intr.reshape(n * f, 4), times, height, width, supersample)
    return frames.reshape(n, f, height, width, 3)
