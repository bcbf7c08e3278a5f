"""Does a trained model use its camera reference, and does it generalise? The losses of an
exported model on training and held-out triplets with the camera reference as given, zeroed,
and replaced by the target itself.

  python benchmarks/reference_use.py --config configs/clone_3d.py --model WORKDIR/export \
      --train DATA/train/latents-... --val DATA/val/latents-... [--batches 4] [--t 0.95,0.7]

Each row is a split and a noise level; the columns are the mean validation loss (the trainer's:
clean-sample or flow loss on the configured frames, fixed noise) with the reference as given,
zeroed and set to the target, and two gaps: ``read`` = zeroed - given (the trainer's camera
gap) and ``copy`` = zeroed - target (how well the model copies a reference that IS the target:
the curriculum's first lesson). A model that reads cameras has a read gap on both splits; a
read gap on the training split alone means the references were learnt by heart (configs/
clone_3d.py's first dataset: +0.06 on training triplets, -0.004 on held-out ones).
"""
import argparse
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np

from camclone_jax.convert.transformer import load_transformer
from camclone_jax.data import pipeline
from camclone_jax.training import loop
from camclone_jax.training import step as step_lib
from camclone_jax.training.data import pipeline_config


def load_config(spec: str):
    """'configs/X.py[:arg]' -> the run config."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("run_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def make_losses(config, dit_cfg, levels):
    """jitted (params, batch, rng) -> {"given"|"zeroed"|"target": [levels, b]} losses."""
    step_cfg = step_lib.StepConfig(text_len=config.data.text_len, **dict(config.objective))
    losses_fn = step_lib.make_example_losses(loop.flax_module(dit_cfg), step_cfg, train=False)

    @jax.jit
    def losses(params, batch, rng):
        inputs = step_lib.model_inputs(batch, dit_cfg, None, step_cfg.text_len,
                                       step_cfg.conditioning, step_cfg.v2v_first_frame)
        x = inputs["x"]  # [b, f, h, w, C]
        variants = {"given": inputs,
                    "zeroed": {**inputs, "cam_latents": jnp.zeros_like(inputs["cam_latents"])},
                    "target": {**inputs, "cam_latents": x}}
        out = {name: [] for name in variants}
        for i, level in enumerate(levels):
            draws = step_lib._draw(jax.random.fold_in(rng, i), x, step_cfg)
            draws["t"] = jnp.full(x.shape[:1], level, jnp.float32)  # [b]
            draws["keep_text"] = jnp.ones(x.shape[:1], bool)
            for name, variant in variants.items():
                out[name].append(losses_fn(params, {}, variant, draws))  # [b]
        return {name: jnp.stack(v) for name, v in out.items()}  # [levels, b]
    return losses


def split_losses(losses, params, config, records: str, batches: int) -> dict:
    """{name: [levels, n]} over the first ``batches`` batches of ``records`` (in order)."""
    loader = pipeline.make_loader(records, pipeline_config(
        config.data, config.batch_size, config.seed, held_out=True))
    out = {}
    try:
        for i, raw in zip(range(batches), loader):
            batch = {k: v for k, v in raw.items() if k not in ("index", "caption")}
            for name, v in losses(params, batch, jax.random.PRNGKey(i)).items():
                out.setdefault(name, []).append(np.asarray(v))
    finally:
        loader.close()
    if not out:
        raise SystemExit(f"no full batch of {config.batch_size} in {records}")
    return {name: np.concatenate(v, axis=1) for name, v in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="configs/X.py[:arg], the model's run config")
    p.add_argument("--model", required=True, help="an export (WORKDIR/export)")
    p.add_argument("--train", required=True, help="training latent records")
    p.add_argument("--val", required=True, help="held-out latent records")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--t", default="0.95,0.7", help="noise levels, comma-separated")
    p.add_argument("--out", default="", help="also write the rows as JSON here")
    args = p.parse_args()
    config = load_config(args.config)
    dit_cfg, params = load_transformer(args.model)
    levels = tuple(float(t) for t in args.t.split(","))
    losses = make_losses(config, dit_cfg, levels)
    rows = []
    print("| split | t | given | zeroed | target as reference | read gap | copy gap |")
    print("|---|---|---|---|---|---|---|")
    for split, records in (("training", args.train), ("held-out", args.val)):
        got = split_losses(losses, params, config, records, args.batches)
        for i, level in enumerate(levels):
            m = {name: float(v[i].mean()) for name, v in got.items()}
            rows.append({"split": split, "t": level, **m, "n": int(got["given"].shape[1]),
                         "read_gap": m["zeroed"] - m["given"],
                         "copy_gap": m["zeroed"] - m["target"]})
            print(f"| {split} | {level:g} | {m['given']:.4f} | {m['zeroed']:.4f} | "
                  f"{m['target']:.4f} | {rows[-1]['read_gap']:+.4f} | "
                  f"{rows[-1]['copy_gap']:+.4f} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
