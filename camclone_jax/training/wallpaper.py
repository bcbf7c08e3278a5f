"""Trains the tiny CamClone model of the wallpaper world (``data.wallpaper``) on the CPU.

The method is the paper's: the camera reference (and, in V2V, the content video) enter only as
frame-concatenated tokens of the CamClone DiT, the first frame as the I2V first-frame channels,
and no camera parameter reaches the model. All parameters train (there is no pretrained base at
this size). The recipe (``Recipe``) is what the probes showed learns within a CPU budget:
patch-1 tokens (one wallpaper cell each), a clean-sample loss on the frames after the first,
noise levels mostly in [t_min, 1] (where the references matter; a fraction t_full anywhere,
so that every sampling step is trained) and a curriculum aid: a fraction
``same_scene`` of the training camera references film the target's own wallpaper (decaying
to none over ``same_scene_steps``: copying is learnt first, then reading). Half the
examples are V2V (a content video of the target's wallpaper moving at another velocity; its
frame 0 is the target's, the release's first-frame rule).

Every ``log_every`` steps the held-out reference-use gap is measured (clean-sample error at
t = probe_t with the camera reference, minus with it zeroed, I2V and V2V) and appended to
WORKDIR/log.jsonl; orbax checkpoints go to WORKDIR/checkpoints and a rerun resumes; at the end
WORKDIR/export is a model ``python -m camclone_jax.sample`` reads (pixel codec, no text).

  python -m camclone_jax.wallpaper_train --workdir /tmp/clone          # the shipped model
  python -m camclone_jax.wallpaper_train --workdir /tmp/nocam --no_camera --same_scene 0
  python -m camclone_jax.wallpaper_train --workdir /tmp/head --base /tmp/nocam/export \
      --train self_attn                                       # the paper's rule, from a base
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax

from camclone_jax import tasks
from camclone_jax.convert.transformer import load_transformer
from camclone_jax.data import wallpaper
from camclone_jax.diffusion import flow
from camclone_jax.models import DiT, DiTConfig
from camclone_jax.models import params as params_lib
from camclone_jax.training import checkpoint as ckpt_lib
from camclone_jax.training import optim


# which params train in the CamClone stage (configs/small_*.py use the same rules)
TRAIN_RULES = {
    "all": ((".*", "train"),),
    "self_attn": (("self_attn", "train"), (".*", None)),  # the paper: only the 3D attention
    "self_attn+patch": (("self_attn", "train"), ("patch_embedding", "train"), (".*", None)),
    "blocks": (("blocks/", "train"), (".*", None)),  # Table 6: whole blocks
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """World, model and optimisation of the tiny wallpaper CamClone model."""

    world: wallpaper.WallpaperWorld = wallpaper.WallpaperWorld()
    dim: int = 64
    head_dim: int = 32
    layers: int = 3
    batch: int = 16
    lr: float = 1e-3
    t_min: float = 0.5  # most training noise levels are in [t_min, 1] ...
    t_full: float = 0.25  # ... and this fraction anywhere in [0, 1] (so every sampler step is trained)
    same_scene: float = 0.75  # curriculum aid (training batches only) ...
    same_scene_steps: int = 5000  # ... decaying linearly to 0 over this many steps (0: constant)
    v2v: float = 0.5  # fraction of V2V examples
    camera: bool = True  # False: the no-camera baseline (camera reference always zero)
    references: bool = True  # False: a base stage, plain Wan I2V (no reference tokens at all)
    concat: str = "frame"  # "frame" (the paper) or "channel" (its Table 5 ablation)
    base: str = ""  # a model export to start from (a base stage), or "" for random init
    rules: tuple = ((".*", "train"),)  # which params train (optim.label_params regexes)
    probe_t: float = 0.95
    probe_batch: int = 64
    text_dim: int = 32
    seed: int = 0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "world": self.world.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        world = dict(d["world"], cells=tuple(d["world"]["cells"]))
        rules = tuple(tuple(r) for r in d.get("rules", cls.rules))
        return cls(**{**d, "world": wallpaper.WallpaperWorld(**world), "rules": rules})

    @classmethod
    def load(cls, path: str) -> "Recipe":
        """The recipe in ``path``: a recipe.json, or a directory holding one (a workdir or a
        model export)."""
        if os.path.isdir(path):
            path = os.path.join(path, "recipe.json")
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @property
    def trains_everything(self) -> bool:
        return tuple(map(tuple, self.rules)) == ((".*", "train"),)


def dit_config(recipe: Recipe) -> DiTConfig:
    """The CamClone DiT: frame concatenation, patch-1 tokens, I2V first-frame channels."""
    c = recipe.world.codec.latent_channels
    return DiTConfig(dim=recipe.dim, ffn_dim=4 * recipe.dim, num_layers=recipe.layers,
                     num_heads=recipe.dim // recipe.head_dim, in_channels=2 * c + 4,
                     out_channels=c, text_dim=recipe.text_dim, freq_dim=64,
                     patch_size=(1, 1, 1), prediction="sample", concat=recipe.concat)


def make_batch(key, recipe: Recipe, n: int, same_scene: float):
    """{target, cam, content, first_frame} latents [n, f, h, w, *] of n triplets, through the
    conditioning contract (``tasks.dit_inputs``): V2V rows (a fraction recipe.v2v) carry a
    content video, I2V rows zeros; every row has its first frame (the target's frame 0, also
    the content's); with recipe.camera False the camera reference is zero."""
    world = recipe.world
    kt, kv2v = jax.random.split(key)
    target, cam, content, _ = wallpaper.latent_triplets(kt, world, n, same_scene)
    task = (jax.random.uniform(kv2v, (n,)) < recipe.v2v).astype(jnp.int32)  # [n] 0 I2V, 1 V2V
    image = target.at[:, 1:].set(0.0)  # [n, f, h, w, c] latents of [first frame, zeros...]
    inputs = tasks.dit_inputs(dit_config(recipe), task=task, cam_latents=cam,
                              content_latents=content, image_latents=image,
                              conditioning="camclone" if recipe.camera else "no_camera")
    return {"target": target, "cam": inputs["cam_latents"],
            "content": inputs["content_latents"], "first_frame": inputs["first_frame"]}


def make_loss(model: DiT, recipe: Recipe):
    """loss(params, batch, z, t): mean squared clean-sample error over frames 1.. (frame 0 is
    given)."""
    text_len = 1

    def loss(p, batch, z, t):
        x = batch["target"]
        xt = flow.add_noise(x, z, t)  # [b, f, h, w, c]
        text = jnp.zeros((x.shape[0], text_len, recipe.text_dim))  # no text
        refs = ({"cam_latents": batch["cam"], "content_latents": batch["content"]}
                if recipe.references else {})  # a base stage sees the target tokens only
        v = model.apply({"params": p}, xt, flow.model_timesteps(t), text, **refs,
                        first_frame=batch["first_frame"])  # [b, f, h, w, c]
        x_hat = xt - jnp.maximum(t, 0.05)[:, None, None, None, None] * v  # clean sample
        return jnp.mean((x_hat - x)[:, 1:] ** 2)

    return loss


def held_out(recipe: Recipe, task: str):
    """The fixed measurement batch of one task ("i2v" / "v2v"): other scenes than training's
    (a separate key), no same-scene aid."""
    r = dataclasses.replace(recipe, v2v=1.0 if task == "v2v" else 0.0, camera=True)
    key = jax.random.fold_in(jax.random.key(10_000 + recipe.seed), 0 if task == "i2v" else 1)
    return make_batch(key, r, recipe.probe_batch, 0.0)


def train(recipe: Recipe, workdir: str, steps: int, *, save_every: int = 500,
          log_every: int = 250, export: bool = True, stop_gap: float | None = None,
          log=print) -> list[dict]:
    """Trains to ``steps`` (resuming from WORKDIR/checkpoints), logs the held-out gaps, exports.
    ``stop_gap``: stop at the first measurement whose I2V camera gap reaches it (time to clone).
    Returns the measurement records of this call."""
    os.makedirs(workdir, exist_ok=True)
    recipe_path = os.path.join(workdir, "recipe.json")
    if os.path.exists(recipe_path):  # a resumed run must be the same recipe
        with open(recipe_path) as f:
            saved = json.load(f)
        if saved != json.loads(json.dumps(recipe.to_dict())):
            raise ckpt_lib.CheckpointError(
                f"{recipe_path} holds another recipe than this run's; use a new --workdir")
    else:
        tmp = recipe_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(recipe.to_dict(), f, indent=1)
        os.replace(tmp, recipe_path)
    cfg = dit_config(recipe)
    model = DiT(cfg)
    params = initial_params(recipe)
    tx = optimizer(recipe, params)
    state = fresh_state(tx, params)
    ckpts = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=save_every,
                                  keep=2)
    restored, at, _ = ckpts.restore_newest_intact(abstract(state))
    if restored is not None:
        state = restored
        log(f"resumed from step {at}")
    loss = make_loss(model, recipe)

    def same_scene_at(step: int) -> float:
        if not recipe.same_scene_steps:
            return recipe.same_scene
        return recipe.same_scene * max(0.0, 1.0 - step / recipe.same_scene_steps)

    @jax.jit
    def step_fn(state, key, same_scene):
        kb, kz, kt = jax.random.split(key, 3)
        batch = make_batch(kb, recipe, recipe.batch, same_scene)
        z = jax.random.normal(kz, batch["target"].shape)
        ku, kf = jax.random.split(kt)
        u = jax.random.uniform(ku, (recipe.batch,))  # [b]
        full = jax.random.uniform(kf, (recipe.batch,)) < recipe.t_full  # [b]
        t = jnp.where(full, u, recipe.t_min + (1.0 - recipe.t_min) * u)  # [b]
        value, grads = jax.value_and_grad(loss)(state["params"], batch, z, t)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt,
                "step": state["step"] + 1}, value

    probes = {task: held_out(recipe, task) for task in ("i2v", "v2v")}
    pz = jax.random.normal(jax.random.key(20_000 + recipe.seed),
                           probes["i2v"]["target"].shape)
    pt = jnp.full((recipe.probe_batch,), recipe.probe_t)

    @jax.jit
    def clean_error(p, batch):
        return loss(p, batch, pz, pt)

    def measure(p):
        out = {}
        for task, b in probes.items():
            with_cam = float(clean_error(p, b))
            no_cam = float(clean_error(p, {**b, "cam": jnp.zeros_like(b["cam"])}))
            out[task] = {"with_camera": with_cam, "no_camera": no_cam, "gap": no_cam - with_cam}
        return out

    records, start, first = [], time.time(), int(state["step"])
    key = jax.random.key(recipe.seed)
    value = None  # no step run yet in this call
    try:
        for i in range(first, steps + 1):
            if i > first:
                state, value = step_fn(state, jax.random.fold_in(key, i),
                                       jnp.float32(same_scene_at(i)))
                ckpts.save(i, state)
            if i % log_every == 0 or i == steps:
                rec = {"step": i, "loss": None if value is None else float(value), **measure(state["params"]),
                       "elapsed_s": round(time.time() - start, 1)}
                records.append(rec)
                log(json.dumps(rec))
                with open(os.path.join(workdir, "log.jsonl"), "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if stop_gap is not None and rec["i2v"]["gap"] >= stop_gap:
                    break
        ckpts.wait()
        if ckpts.latest_step() != int(state["step"]):
            ckpts.save(int(state["step"]), state, force=True)
            ckpts.wait()
    finally:
        ckpts.close()
    if export:
        export_model(os.path.join(workdir, "export"), recipe, state["params"],
                     f"camclone_jax.wallpaper_train step {int(state['step'])}")
    return records


def initial_params(recipe: Recipe) -> dict:
    """Random init, or the base model's params (its patch embedding grown with zero rows for a
    channel-concat model)."""
    cfg = dit_config(recipe)
    if not recipe.base:
        return params_lib.init_params(cfg, recipe.seed)
    base_cfg, params = load_transformer(recipe.base)
    if base_cfg.num_layers != cfg.num_layers or base_cfg.dim != cfg.dim:
        raise ValueError(f"base {recipe.base} has {base_cfg.num_layers} layers of width "
                         f"{base_cfg.dim}; the recipe wants {cfg.num_layers} of {cfg.dim}")
    params = ckpt_lib.expand_for_channel_concat(params, cfg)
    return jax.tree_util.tree_map(jnp.asarray, params)


def optimizer(recipe: Recipe, params):
    """Adam at recipe.lr over the params the rules train (all of them by default)."""
    if recipe.trains_everything:
        return optax.adam(recipe.lr)
    return optim.make_optimizer(params, recipe.rules, recipe.lr, clip_norm=None)


def fresh_state(tx, params) -> dict:
    """The train state a run starts from (and the layout its checkpoints hold)."""
    return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def abstract(state) -> dict:
    """Shapes and dtypes of ``state``, to restore a checkpoint into."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def export_latest(workdir: str, out: str) -> int:
    """Exports the newest intact checkpoint of WORKDIR (its recipe.json) to ``out`` without
    touching the run (which may still be training); returns its step."""
    recipe = Recipe.load(workdir)
    params = params_lib.init_params(dit_config(recipe), recipe.seed)  # shapes only
    state = fresh_state(optimizer(recipe, params), params)
    ckpts = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1, keep=2)
    try:
        restored, step, _ = ckpts.restore_newest_intact(abstract(state))
    finally:
        ckpts.close()
    if restored is None:
        raise ckpt_lib.CheckpointError(f"no checkpoint in {workdir}/checkpoints")
    export_model(out, recipe, restored["params"], f"camclone_jax.wallpaper_train step {step}")
    return step


def export_model(out: str, recipe: Recipe, params, source: str):
    """A model directory the sampler reads: weights, codec.json (pixel), text.json (none) and
    recipe.json (the world it was trained on)."""
    extra = {"codec.json": recipe.world.codec.to_dict(),
             "text.json": {"kind": "none", "text_len": 1, "text_dim": recipe.text_dim},
             "recipe.json": recipe.to_dict()}
    ckpt_lib.export_model(out, dit_config(recipe), jax.device_get(params), extra_files=extra,
                          overwrite=True, source=source)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--no_camera", action="store_true",
                   help="train the no-camera baseline (camera reference always zero)")
    p.add_argument("--same_scene", type=float, default=Recipe.same_scene)
    p.add_argument("--same_scene_steps", type=int, default=Recipe.same_scene_steps,
                   help="decay --same_scene linearly to 0 over this many steps (0: constant)")
    p.add_argument("--lr", type=float, default=Recipe.lr)
    p.add_argument("--dim", type=int, default=Recipe.dim)
    p.add_argument("--head_dim", type=int, default=Recipe.head_dim)
    p.add_argument("--layers", type=int, default=Recipe.layers)
    p.add_argument("--base", default="", help="start from this model export (a base stage)")
    p.add_argument("--base_stage", action="store_true",
                   help="train a base: plain Wan I2V on the target videos, no reference tokens")
    p.add_argument("--train", default="all", choices=sorted(TRAIN_RULES),
                   help="which params train: all, self_attn (the paper's rule), blocks (Table 6)")
    p.add_argument("--concat", choices=("frame", "channel"), default="frame")
    p.add_argument("--seed", type=int, default=Recipe.seed)
    p.add_argument("--texture", choices=("blocks", "smooth"), default="blocks")
    p.add_argument("--blur_px", type=float, default=2.0, help="smooth texture's blur")
    p.add_argument("--step_px", type=int, default=0,
                   help="pixels per latent frame per unit of velocity (0: one cell)")
    p.add_argument("--export_only", default=None, metavar="DIR",
                   help="export WORKDIR's newest checkpoint to DIR and exit (the run may go on)")
    p.add_argument("--save_every", type=int, default=500)
    p.add_argument("--log_every", type=int, default=250)
    args = p.parse_args(argv)
    if args.export_only:
        try:
            step = export_latest(args.workdir, args.export_only)
        except (ckpt_lib.CheckpointError, OSError) as e:
            print(f"error: {ckpt_lib.one_line(e)}", file=sys.stderr)
            return 2
        print(f"exported step {step} to {args.export_only}")
        return 0
    world = wallpaper.WallpaperWorld(texture=args.texture, blur_px=args.blur_px,
                                     step_px=args.step_px)
    recipe = Recipe(world=world, camera=not args.no_camera, references=not args.base_stage,
                    same_scene=args.same_scene,
                    same_scene_steps=args.same_scene_steps, lr=args.lr, seed=args.seed,
                    dim=args.dim, head_dim=args.head_dim, layers=args.layers, base=args.base,
                    rules=TRAIN_RULES[args.train], concat=args.concat)
    try:
        train(recipe, args.workdir, args.steps, save_every=args.save_every,
              log_every=args.log_every)
    except (ckpt_lib.CheckpointError, OSError) as e:
        print(f"error: {ckpt_lib.one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
