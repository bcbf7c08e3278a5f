"""Camera poses from a video with COLMAP (the `pycolmap` bindings): the field's weight-free standard.

`estimate_poses_colmap(frames, intrinsics)` returns a `poses.PoseEstimate` in our convention
(camera-to-world, OpenCV axes, relative to frame 0, the largest camera distance from frame 0 is
1), like `poses.estimate_poses`. The frames are written as PNG files to a temporary folder and
go through COLMAP's pipeline:

1. SIFT feature extraction, one PINHOLE camera for the whole video with the given (or assumed,
   60 deg horizontal field of view) intrinsics;
2. sequential matching of each frame with the next `overlap` frames, loop detection off;
3. mapping with the intrinsics held fixed: "global" (GLOMAP's rotation averaging + global
   positioning, the default: it registers rotation-only clips, which the incremental mapper
   cannot initialise) or "incremental" (COLMAP's classic mapper).

A video COLMAP does not register completely (every frame in one model) raises
`PoseEstimationError` naming how many frames were registered, so callers report it. Pure
rotations and static shots have no baseline: COLMAP still returns a translation for them (noise
scaled to unit length), which is what its translation metrics then measure.

pycolmap is an optional dependency (`pip install pycolmap==4.2.1`, CPU wheels); it is imported
inside `estimate_poses_colmap` so the rest of the evaluation works without it.
"""
import dataclasses
import os
import tempfile
import time

import cv2
import numpy as np

from camclone_jax.eval import poses
from camclone_jax.eval.sfm import PoseEstimationError

MAPPERS = ("global", "incremental")


@dataclasses.dataclass(frozen=True)
class ColmapConfig:
    """COLMAP settings.

    mapper: "global" (GLOMAP) or "incremental".
    max_num_features: SIFT features per frame.
    max_image_size: longest side the frames are scaled to for extraction (-1: full size).
    overlap: each frame is matched with this many following frames.
    num_threads: threads of extraction, matching and mapping. 1 by default: with more (in any of
      the three steps), COLMAP 4.2's results change from run to run, on rotation-only clips by
      tens of degrees, and a video scored against itself must score 0; run videos in parallel
      instead (`evaluate --workers`).
    seed: COLMAP's random seed (RANSAC, mapping), so results are reproducible.
    init_min_tri_angle: the incremental mapper's smallest triangulation angle of its initial
      pair, degrees (COLMAP's 16 suits photo collections; consecutive video frames need less).
    """
    mapper: str = "global"
    max_num_features: int = 2048
    max_image_size: int = -1
    overlap: int = 10
    num_threads: int = 1
    seed: int = 0
    init_min_tri_angle: float = 4.0


def import_pycolmap():
    """pycolmap, or an ImportError saying how to install it."""
    try:
        import pycolmap  # optional heavy dependency: only the COLMAP backend needs it
    except ImportError as e:
        raise ImportError("the COLMAP pose backend needs pycolmap: pip install pycolmap==4.2.1 "
                          f"({e})") from None
    pycolmap.logging.minloglevel = 2  # errors only: COLMAP logs every step at INFO
    return pycolmap


def pycolmap_version():
    """pycolmap's version string, or "(pycolmap not installed)"."""
    try:
        return import_pycolmap().__version__
    except ImportError:
        return "(pycolmap not installed)"


def _write_frames(frames, folder):
    """frames uint8 [F, H, W, 3] RGB -> folder/00000.png ...; returns the file names."""
    names = [f"{i:05d}.png" for i in range(len(frames))]
    for name, frame in zip(names, frames):
        if not cv2.imwrite(os.path.join(folder, name), frame[..., ::-1]):  # RGB -> BGR
            raise OSError(f"cannot write frame {os.path.join(folder, name)}")
    return names


def _mapping(pycolmap, config, database, images, out):
    """Runs the configured mapper with fixed intrinsics; {index: Reconstruction}."""
    if config.mapper == "incremental":
        opts = pycolmap.IncrementalPipelineOptions()
        opts.ba_refine_focal_length = False
        opts.ba_refine_principal_point = False
        opts.ba_refine_extra_params = False
        opts.multiple_models = False
        opts.random_seed = config.seed
        opts.num_threads = config.num_threads
        opts.mapper.init_min_tri_angle = config.init_min_tri_angle
        return pycolmap.incremental_mapping(database, images, out, opts)
    opts = pycolmap.GlobalPipelineOptions()
    opts.random_seed = config.seed
    opts.num_threads = config.num_threads
    opts.multiple_models = False
    opts.mapper.num_threads = config.num_threads
    opts.mapper.random_seed = config.seed
    ba = opts.mapper.bundle_adjustment
    ba.refine_focal_length = False
    ba.refine_principal_point = False
    ba.refine_extra_params = False
    return pycolmap.global_mapping(database, images, out, opts)


def _registered_w2c(reconstruction):
    """{frame index: world-to-camera [4, 4]} of the registered frames."""
    out = {}
    for image in reconstruction.images.values():
        if image.has_pose:
            w2c = np.eye(4)
            w2c[:3] = image.cam_from_world().matrix()  # [3, 4]
            out[int(os.path.splitext(image.name)[0])] = w2c
    return out


def _ranges(indices):
    """'3-5, 9' for [3, 4, 5, 9]."""
    parts, start = [], None
    for i, v in enumerate(indices):
        if start is None:
            start = v
        if i + 1 == len(indices) or indices[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def estimate_poses_colmap(frames, intrinsics=None, config=ColmapConfig(), fov_deg=poses.DEFAULT_FOV_DEG):
    """Camera-to-world poses of a video by COLMAP (see the module docstring).

    Args:
      frames: uint8 [F, H, W, 3] RGB frames, F >= 2.
      intrinsics: normalised (fx, fy, cx, cy), [4] or [F, 4] (COLMAP uses the first row: one
        camera); None assumes `poses.default_intrinsics(H, W, fov_deg)`.
      config: a `ColmapConfig`.
    Returns:
      a `poses.PoseEstimate` (mode "colmap-global" or "colmap-incremental"; num_tracks: 3D points,
      median_error_px: COLMAP's mean reprojection error).
    Raises:
      ValueError for malformed input; PoseEstimationError when COLMAP does not register every
      frame; ImportError without pycolmap.
    """
    if config.mapper not in MAPPERS:
        raise ValueError(f"mapper must be one of {MAPPERS}, got {config.mapper!r}")
    frames = poses.check_frames(frames)
    num_frames, height, width = frames.shape[:3]
    intr, assumed = poses.check_intrinsics(intrinsics, num_frames, height, width, fov_deg)
    pycolmap = import_pycolmap()
    fx, fy, cx, cy = intr[0] * [width, height, width, height]  # pixels
    clock, seconds = time.perf_counter(), {}

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        seconds[stage], clock = now - clock, now
    with tempfile.TemporaryDirectory(prefix="colmap-") as tmp:
        images, database, out = (os.path.join(tmp, d) for d in ("images", "database.db", "sparse"))
        os.makedirs(images)
        os.makedirs(out)
        _write_frames(frames, images)
        lap("write")
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "PINHOLE"
        reader.camera_params = f"{fx},{fy},{cx},{cy}"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = config.num_threads
        extraction.max_image_size = config.max_image_size
        extraction.sift.max_num_features = config.max_num_features
        pycolmap.extract_features(database, images, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, extraction_options=extraction,
                                  device=pycolmap.Device.cpu)
        lap("extract")
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = config.overlap
        pairing.loop_detection = False
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = config.num_threads
        verification = pycolmap.TwoViewGeometryOptions()
        verification.ransac.random_seed = config.seed
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  verification_options=verification, device=pycolmap.Device.cpu)
        lap("match")
        models = _mapping(pycolmap, config, database, images, out)
        lap("map")
    if not models:
        raise PoseEstimationError(f"COLMAP ({config.mapper} mapper) built no model: no two frames "
                                  "it could relate (too few features or matches)")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    w2c = _registered_w2c(best)
    missing = [i for i in range(num_frames) if i not in w2c]
    if missing:
        raise PoseEstimationError(f"COLMAP ({config.mapper} mapper) registered {len(w2c)} of "
                                  f"{num_frames} frames (unregistered: {_ranges(missing)})")
    w2c = np.stack([w2c[i] for i in range(num_frames)])  # [F, 4, 4]
    return poses.PoseEstimate(
        c2w=poses.relative_unit_c2w(np.linalg.inv(w2c)), intrinsics=intr,
        mode=f"colmap-{config.mapper}", num_tracks=int(best.num_points3D()),
        num_inlier_tracks=int(best.num_points3D()),
        median_error_px=float(best.compute_mean_reprojection_error()), rotation_error_px=float("nan"),
        fallback_frames=[], assumed_intrinsics=assumed, seconds=seconds)
