"""Held-out camera cloning of wallpaper-world models: the acceptance table of issue 17.

Scores, I2V and V2V separately, on held-out scenes and both trajectory sets (``constant``: the
training kind; ``path``: never trained, the velocity changes every latent frame): the ground
truth (the camera reading's validation), copy-first-frame (a static camera), the CamClone model
with its camera reference and with it zeroed, and the no-camera model (trained with the camera
reference always zero) when given. Every sample comes from ``CamClonePipeline.generate``.
Writes the rows as JSON (--out) and prints markdown tables.

  python benchmarks/clone_eval.py --model camclone_jax/assets/models/clone_tiny \\
      --no_camera_model /tmp/nocam/export --clips 64 --out docs/clone_results.json
"""
import argparse
import json
import sys

from camclone_jax import inference
from camclone_jax.eval import clone as clone_eval
from camclone_jax.inference import clone as clone_lib
from camclone_jax.utils import write_atomic


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=clone_lib.SHIPPED)
    p.add_argument("--no_camera_model", default=None)
    p.add_argument("--clips", type=int, default=64, help="held-out clips per trajectory set")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--paths", nargs="+", default=["constant", "path"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    world = clone_lib.load_world(args.model)
    models = {"CamClone": inference.CamClonePipeline.from_checkpoint(args.model)}
    no_camera = {}
    if args.no_camera_model:
        no_camera["no-camera model"] = inference.CamClonePipeline.from_checkpoint(
            args.no_camera_model)
    result = {"model": args.model, "no_camera_model": args.no_camera_model,
              "clips": args.clips, "steps": args.steps, "world": world.to_dict(), "tables": {}}
    for paths in args.paths:
        clips = clone_eval.held_out_clips(world, args.clips, paths)
        rows = clone_lib.evaluate(models, clips, world, no_camera_models=no_camera,
                                       steps=args.steps,
                                       log=lambda r: print(json.dumps(
                                           {k: v for k, v in r.items() if k != "per_clip"}),
                                           flush=True))
        result["tables"][paths] = rows
        print(f"\n{paths} trajectories, {args.clips} held-out clips:\n"
              + clone_eval.markdown(rows) + "\n", flush=True)
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
