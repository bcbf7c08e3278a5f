"""The defaults every training config (configs/*.py) starts from: ``base_config()``, per key.

Experiment files (configs/demo.py, wan1_3b_camclone.py, paper.py, wan14b_camclone.py) change what they
need; with ``lock_config=True`` a command-line override of a key that is not here is an error.
"""

import dataclasses
import importlib.util
import os

import ml_collections

from camclone_jax.data.wallpaper import WallpaperWorld
from camclone_jax.models.config import DiTConfig

DIT_FIELDS = frozenset(f.name for f in dataclasses.fields(DiTConfig))


def sibling_config(config_file: str, name: str, arg: str = "") -> ml_collections.ConfigDict:
    """``get_config(arg)`` of configs/<name>.py beside ``config_file`` (loaded by path, so a
    config that builds on another works from any working directory)."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"camclone_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = {}  # DiTConfig fields (camclone_jax/models/config.py)
    c.base_checkpoint = ""  # base DiT weights (any format convert reads); "": random init
    c.clip_checkpoint = ""  # CLIP ViT-H/14 weights, for models with image cross-attention
    c.frozen_dtype = "float32"  # storage dtype of the frozen base params ("bfloat16" halves it)

    c.data = ml_collections.ConfigDict(dict(
        path="",  # triplet ArrayRecord files: a folder, glob or file
        val_path="",  # held-out triplets for the validation loss ("": none)
        kind="mp4",  # "mp4" (pixels, with a codec), "latent" (pre-encoded latents) or
        # "wallpaper" (the procedural clone world, data.wallpaper_source: no files; its world
        # sets frames, height, width and the pixel codec)
        frames=81, height=480, width=832, frame_stride=1, short_video="reject",
        v2v_ratio=0.5,  # the paper's 50% V2V / 50% I2V mix
        text="cached",  # "cached" (records' text_embedding) or "none" (zero text context)
        text_len=512,  # text tokens (Wan pads prompts to 512)
        num_workers=2, max_bad_records=100,
        codec=ml_collections.FieldReference(None, field_type=dict),  # e.g. {"kind": "pixel"}
        synthetic=ml_collections.FieldReference(None, field_type=dict),  # generate if no path
        # ({num_groups, seed, val_groups, val_seed} and optionally the generator's world:
        # moves, max_angle, max_roll, constant_speed, scenes; data/synthetic/writer.py)
        # record runs' curriculum (data/curriculum.py): this fraction of training camera
        # references are the target itself, decaying linearly to 0 over same_scene_steps
        same_scene=0.0, same_scene_steps=0,
        # record runs' camera-preserving augmentation (data/augment.py): {"geometry": flips
        # and transposes of whole triplets, "ref_colour": the camera reference's RGB order and
        # inversion}; pixel records or pixel-codec latents only
        augment=ml_collections.FieldReference(None, field_type=dict),
        synthetic_dir="",  # where the synthetic splits go ("": WORKDIR/data; shared by runs)
        wallpaper=ml_collections.ConfigDict(dict(  # kind "wallpaper", or wallpaper_mix > 0
            world=ml_collections.ConfigDict(WallpaperWorld().to_dict()),  # its geometry
            # curriculum: this fraction of training camera references film the target's own
            # scene (copying is learnt first), decaying linearly to 0 over same_scene_steps
            same_scene=0.0, same_scene_steps=0,  # (steps 0: constant)
            val_seed=10_000,  # the held-out split: other scenes (training's seed is `seed`)
            val_paths="mixed",  # constant velocities and never-trained varying paths
        )),
        # kind "latent" (pixel codec) only: this fraction of training examples come from the
        # wallpaper world above (its geometry must be the records'), decaying linearly to 0
        # over wallpaper_mix_steps (0: constant); camera reading learnt there is kept
        # exercised (data/world_mix.py); the held-out split stays the records'
        wallpaper_mix=0.0, wallpaper_mix_steps=0,
    ))
    c.batch_size = 4  # global, per optimizer step
    c.accum_steps = 1  # micro-batches per step (gradient accumulation)
    c.total_steps = 1000

    c.optim = ml_collections.ConfigDict(dict(
        rules=(("self_attn", "train"), (".*", None)),  # (regex over param paths, rule)
        lr=5e-5, warmup_steps=0, schedule="constant", end_factor=0.0,  # "constant" | "cosine"
        b1=0.9, b2=0.999, weight_decay=0.0, clip_norm=1.0, ema_decay=0.0,
    ))
    c.objective = ml_collections.ConfigDict(dict(
        timestep_sampling="shifted", shift=5.0, logit_mean=0.0, logit_std=1.0,
        t_min=0.5, t_full=0.25,  # "floor": t in [t_min, 1], a fraction t_full anywhere
        bell_weighting=False, text_drop_prob=0.0,
        loss="velocity",  # velocity (the paper's flow loss) | sample (clean-sample error)
        loss_from_frame=0,  # 1: no loss on the first frame (it is given in I2V)
        conditioning="camclone",  # camclone | base (stage 1: no references) | no_camera
        # V2V's first frame (camclone_jax.tasks): "content" (the release: training conditions
        # on the target's own first frame in both tasks) | "none" (zero, a black frame's CLIP)
        v2v_first_frame="content",
        # weight in the training loss of target content the first frame did not show (a
        # wallpaper with scene_scale > 1): 1 the plain loss, 0 only what could be copied counts
        new_content_weight=1.0,
        # the sampler's own states: this fraction of training examples gets the Euler step to
        # t from the model's own velocity at t + self_state_dt (1: from pure noise), not
        # fresh noise (loss "sample" only)
        self_state=0.0, self_state_dt=0.1,
    ))
    c.nonfinite = "stop"  # NaN/inf loss: "stop" (raise; last good checkpoint kept) or "skip"

    c.mesh = dict(data=-1, fsdp=1, context=1, tensor=1)  # -1: the remaining devices
    c.mesh_devices = 0  # use the first N devices (single process only); 0: all of them
    c.sharding_rules = ml_collections.FieldReference(None, field_type=list)  # None: defaults
    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, async_save=True))
    c.log_every = 10
    c.eval_every = 0  # steps between validation losses (0: never)
    c.eval_batches = 4
    # noise levels of the validation loss and the reference-use gaps (() : 4 mid-points of
    # [0, 1]); the gaps (val_camera_gap, val_content_gap) are the validation loss with the
    # camera (content) reference zeroed minus with it: > 0 once the model reads it
    c.eval_t = ()
    c.peak_flops = 0.0  # per-device peak FLOP/s for MFU (0: from the device table)
    c.export = True  # write WORKDIR/export (full params) at the end
    c.sample = ml_collections.ConfigDict(dict(
        enabled=False, steps=50, shift=5.0, cfg=5.0, seed=0,
    ))
    # closing camera-cloning check of a wallpaper run (inference.clone): the model just
    # trained on `clips` held-out clips on never-trained camera paths, its RotErr next to its
    # own with the camera reference zeroed, the no-camera model's ("": the shipped one) and a
    # static camera's
    c.clone_check = ml_collections.ConfigDict(dict(
        enabled=False, no_camera_model="", clips=16, steps=20,
    ))
    return c


CLONE_RULES = {  # the clone configs' parameter splits (clone_tiny.py, clone_3d.py variants)
    "all": ((".*", "train"),),
    "self_attn": (("self_attn", "train"), (".*", None)),
    "blocks": (("blocks/", "train"), (".*", None)),
    "channel": (("self_attn", "train"), ("patch_embedding", "train"), (".*", None)),
}


def clone_recipe(config: ml_collections.ConfigDict, total_steps: int) -> ml_collections.ConfigDict:
    """The recipe that made camera reading emerge on a CPU (docs/results.md), set on
    ``config``: batch 16, Adam 1e-3 constant, no clipping or decay, every parameter trains; the
    clean-sample loss on the frames after the first with noise levels uniform in [0.5, 1] and
    25% anywhere; one device; checkpoints and validation every 250 steps on 64 held-out
    triplets at t = 0.95 (where the references matter most); logs every 50."""
    config.batch_size = 16
    config.total_steps = total_steps
    config.optim.update(rules=CLONE_RULES["all"], lr=1e-3, warmup_steps=0, schedule="constant",
                        clip_norm=0.0, weight_decay=0.0)
    config.objective.update(timestep_sampling="floor", t_min=0.5, t_full=0.25, loss="sample",
                            loss_from_frame=1)
    config.mesh_devices = 1  # a one-device toy, whatever the machine has
    config.checkpoint.update(every=250, keep=2)
    config.log_every = 50
    config.eval_every = 250
    config.eval_batches = 4  # 64 held-out triplets
    config.eval_t = (0.95,)
    return config


def override(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """Sets each dotted key of ``values`` ("optim.lr": 3e-4) in ``config`` (as
    ``--config.optim.lr=3e-4`` would); a key the config does not have is a KeyError naming it,
    except a DiTConfig field under ``model`` (the model block holds the fields it changes)."""
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        model_field = parents == ["model"] and leaf in DIT_FIELDS
        if leaf not in node and not model_field:
            raise KeyError(f"{key} is not a config key")
        node[leaf] = value
    return config
