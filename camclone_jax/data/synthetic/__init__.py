"""Procedural Camera Clone Dataset: trajectories, scenes, a JAX ray caster and the writer.

  trajectories  camera rules, pose convention (OpenCV axes, c2w), RealEstate10K converters
  subject       the animated sphere figure at every location
  scene         procedural indoor/outdoor locations, day/night palettes, captions
  render        the jit-compiled pinhole ray caster
  dataset       groups of 4 locations x 10 shared trajectories, the triplet rule
  writer        the output folder: ArrayRecord triplets, mp4s + CamCloneDataset.csv, poses, preview
  moves         camera moves in plain words and edits of a camera path (camera references)
  camera_ref    a neutral scene filmed along any camera path: the camera reference of a move

Command line: `python -m camclone_jax.data.synthetic --out DIR --num_groups N ...`.
"""
