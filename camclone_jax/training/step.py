"""The CamClone training step: flow loss on frame-concatenated references, masked update.

  state = init_state(trainable, tx, seed, ema=...)          # a plain dict (an orbax pytree)
  step_fn = make_train_step(model, tx, StepConfig(...), codec=codec,
                            batch_constraint=constrain, learning_rate=schedule)
  state, metrics = step_fn(state, frozen, batch)            # jit it with shardings + donation

The parameters are split in two plain trees by the optimizer rules (optim.label_params):
``trainable`` (in the state, fp32, with optimizer moments and an optional EMA) and ``frozen``
(passed alongside, never differentiated, optionally bf16). Only the trainable tree is
checkpointed; the frozen one is the base model, referenced by path.

One step (paper eq. 1-2, REFERENCE.md 1-2):
  1. Inputs: the codec (if any) turns pixel clips into latents; the references and the
     first-frame condition come from the one conditioning contract (``camclone_jax.tasks``):
     I2V examples (task 0) get a zero content latent; an I2V base (cond_channels > 0) gets the
     first-frame condition (mask + latent of [target's first frame, zeros...]) in both tasks, as
     the release trains (``v2v_first_frame="none"``: zero for V2V). Text: cached embeddings
     from the batch, or zeros when the config trains without text; ``text_drop_prob`` zeroes it per example.
  2. Per example: t from the configured sampler (uniform / logit-normal / shifted / floor), noise z,
     x_t = (1 - t) x + t z, and a latent-drop key (used when the model's ``cond_drop`` > 0).
     The noise, t and keys of the whole batch are drawn first, so splitting it into
     micro-batches does not change them.
  3. Loss = mean || v(x_t, 1000 t, refs) - (z - x) ||^2 over the target tokens (optionally
     bell-weighted; ``loss="sample"``: the clean-sample error instead, and ``loss_from_frame=1``
     skips the given first frame, ``diffusion.flow.example_losses``); gradients summed over
     ``accum_steps`` micro-batches (lax.scan), averaged.
  4. Non-finite loss or gradient norm: the update is dropped (params, moments, EMA unchanged;
     the step counter still advances) and ``metrics["finite"]`` is 0 so the loop can stop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from camclone_jax import tasks
from camclone_jax.diffusion import flow
from camclone_jax.utils import flatten_params, unflatten_params

NONFINITE_POLICIES = ("stop", "skip")
CONDITIONING = tasks.CONDITIONING  # camclone | base | no_camera (see camclone_jax.tasks)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The objective and update settings of one step."""

    timestep_sampling: str = "shifted"  # uniform | logit_normal | shifted | floor
    shift: float = 5.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    t_min: float = 0.5  # "floor": t in [t_min, 1] ...
    t_full: float = 0.25  # ... except this fraction anywhere in [0, 1]
    bell_weighting: bool = False
    loss: str = "velocity"  # velocity (the paper) | sample (clean-sample error, see flow)
    loss_from_frame: int = 0  # 1: the loss skips the first frame (given in I2V)
    accum_steps: int = 1  # micro-batches per step
    ema_decay: float = 0.0  # 0: no EMA
    text_len: int = 0  # tokens of the text context (zeros when no cached embeddings)
    text_drop_prob: float = 0.0  # zero an example's text (for classifier-free guidance)
    nonfinite: str = "stop"  # "stop" (loop raises) or "skip" (drop the step, go on)
    conditioning: str = "camclone"  # camclone | base | no_camera (see CONDITIONING)
    v2v_first_frame: str = "content"  # content (release: target's frame 0) | none (zero)
    # training loss weight of target content the first frame did not show (1: the plain
    # loss); needs the batch's "in_first_view" [b, f, h, w] (the wallpaper source gives it)
    new_content_weight: float = 1.0
    # the sampler's own states: this fraction of training examples gets, instead of x_t, the
    # Euler step to t from the model's own (gradient-stopped) velocity at t + self_state_dt
    # (at most 1: from pure noise), so the model learns to correct what its earlier steps
    # left, as its sampler asks of it (needs loss "sample": the target is the clean sample)
    self_state: float = 0.0
    self_state_dt: float = 0.1

    def validate(self):
        """Raises ValueError naming the first bad field."""
        if self.timestep_sampling not in flow.SAMPLERS:
            raise ValueError(f"timestep_sampling {self.timestep_sampling!r} not in {flow.SAMPLERS}")
        if self.loss not in flow.LOSSES:
            raise ValueError(f"loss {self.loss!r} not in {flow.LOSSES}")
        if not (0.0 <= self.t_min < 1.0 and 0.0 <= self.t_full <= 1.0):
            raise ValueError(f"t_min must be in [0, 1) and t_full in [0, 1], got {self.t_min}, "
                             f"{self.t_full}")
        if self.loss_from_frame < 0:
            raise ValueError(f"loss_from_frame must be >= 0, got {self.loss_from_frame}")
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        tasks.validate(self.conditioning, self.v2v_first_frame)
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
        if not 0.0 <= self.text_drop_prob <= 1.0:
            raise ValueError(f"text_drop_prob must be in [0, 1], got {self.text_drop_prob}")
        if not 0.0 <= self.self_state <= 1.0 or not 0.0 < self.self_state_dt <= 1.0:
            raise ValueError(f"self_state must be in [0, 1] and self_state_dt in (0, 1], got "
                             f"{self.self_state}, {self.self_state_dt}")
        if self.self_state and self.loss != "sample":
            raise ValueError(f"self_state needs loss 'sample' (the clean sample is the target of "
                             f"a state the model made), got loss {self.loss!r}")
        if not 0.0 <= self.new_content_weight <= 1.0:
            raise ValueError(f"new_content_weight must be in [0, 1], got "
                             f"{self.new_content_weight}")


# ------------------------------------------------------------------------------ parameters
def split_params(params, labels) -> tuple[dict, dict]:
    """(trainable, frozen) nested trees of ``params`` by an optim.label_params label tree."""
    flat, flat_labels = flatten_params(params), flatten_params(labels)
    trainable = {k: v for k, v in flat.items() if flat_labels[k] != "frozen"}
    frozen = {k: v for k, v in flat.items() if flat_labels[k] == "frozen"}
    if not trainable:
        raise ValueError("the optimizer rules train no parameter at all")
    return unflatten_params(trainable), unflatten_params(frozen)


def merge_params(trainable, frozen) -> dict:
    """The full nested param tree from its two parts."""
    return unflatten_params({**flatten_params(frozen), **flatten_params(trainable)})


def init_state(trainable, tx: optax.GradientTransformation, seed: int, ema: bool = False) -> dict:
    """The train state: step, trainable params, optimizer state, EMA (or None), RNG key."""
    return {"step": jnp.zeros((), jnp.int32), "params": trainable, "opt_state": tx.init(trainable),
            "ema": jax.tree_util.tree_map(jnp.array, trainable) if ema else None,
            "rng": jax.random.PRNGKey(seed)}


def state_shardings(tx: optax.GradientTransformation, trainable, trainable_shardings, replicated,
                    ema: bool = False) -> dict:
    """Shardings of ``init_state``'s tree: optimizer moments and EMA follow their parameter's
    sharding, counters and the RNG key are ``replicated``. With several trained groups (rules),
    each group's state holds ``optax.MaskedNode`` placeholders for the other groups' params;
    they stay as they are."""
    abstract_opt = jax.eval_shape(tx.init, trainable)
    masked = optax.MaskedNode
    opt = optax.tree_map_params(
        tx, lambda p, s: p if isinstance(p, masked) else s, abstract_opt, trainable_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (jax.sharding.Sharding, masked)))
    return {"step": replicated, "params": trainable_shardings, "opt_state": opt,
            "ema": trainable_shardings if ema else None, "rng": replicated}


# ---------------------------------------------------------------------------------- inputs
def _per_example(mask, x):
    """Broadcasts a [b] mask over x [b, ...]."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def model_inputs(batch: dict, dit_cfg, codec=None, text_len: int = 0,
                 conditioning: str = "camclone", v2v_first_frame: str = "content") -> dict:
    """Batch -> the DiT's inputs: x (clean target latents), text and the keyword conditions,
    built by the one conditioning contract (``camclone_jax.tasks.dit_inputs``).

    The first frame is the target's own, in both tasks (the release's training), unless
    ``v2v_first_frame`` is "none" (V2V examples then get a zero first-frame condition).

    ``batch``: target, camera_ref, content_ref (pixels [b, F, H, W, 3] with a codec, else
    latents [b, f, h, w, C]), task [b], first_frame [b, H, W, 3] (pixels, for an I2V base with a
    codec) or i2v_latents [b, f, h, w, C], text_embedding [b, text_len, dim] (if cached),
    image_embeds [b, n, d] (CLIP tokens of ``tasks.conditioning_image``, for models with image
    cross-attention).
    """
    def latents(key):
        v = batch[key]
        if codec is None:
            return v.astype(jnp.float32)
        return codec.encode(_to_float(v))  # [b, f, h, w, C]

    x = latents("target")  # [b, f, h, w, C]
    refs = {}
    if conditioning != "base":
        refs = dict(cam_latents=latents("camera_ref"), content_latents=latents("content_ref"))
    image_latents = None
    if dit_cfg.cond_channels:
        if "i2v_latents" in batch:
            image_latents = batch["i2v_latents"].astype(jnp.float32)  # [b, f, h, w, C]
        elif codec is not None:
            video = tasks.first_frame_video(_to_float(batch["first_frame"]),
                                            batch["target"].shape[1])  # [b, F, H, W, 3]
            image_latents = codec.encode(video)  # [b, f, h, w, C]
    out = {"x": x, **tasks.dit_inputs(dit_cfg, task=batch["task"], image_latents=image_latents,
                                      image_embeds=batch.get("image_embeds"),
                                      conditioning=conditioning,
                                      v2v_first_frame=v2v_first_frame, **refs)}
    b = x.shape[0]
    if "in_first_view" in batch:
        out["in_first_view"] = batch["in_first_view"].astype(jnp.float32)  # [b, f, h, w]
    if "text_embedding" in batch:
        out["text"] = batch["text_embedding"].astype(jnp.float32)  # [b, text_len, dim]
    else:
        out["text"] = jnp.zeros((b, max(text_len, 1), dit_cfg.text_dim), jnp.float32)
    return out


def _to_float(v):
    """uint8 pixels -> float in [-1, 1]; float arrays unchanged."""
    return v.astype(jnp.float32) / 127.5 - 1.0 if v.dtype == jnp.uint8 else v


# ------------------------------------------------------------------------------------ step
def _tree_norm(tree):
    """Global L2 norm (optax.tree.norm where it exists, else optax.global_norm)."""
    tree_ns = getattr(optax, "tree", None)
    return tree_ns.norm(tree) if hasattr(tree_ns, "norm") else optax.global_norm(tree)


_COND_DROP_STREAM = 0x636F6E64  # fold_in data of the latent-drop keys ("cond")
_SELF_STATE_STREAM = 0x73656C66  # ... and of the own-state picks ("self")


def _draw(rng, x, cfg: StepConfig):
    """Per-example timesteps, positions, noise, text-drop mask and latent-drop keys."""
    k_t, k_z, k_drop = jax.random.split(rng, 3)
    b = x.shape[0]
    t, u = flow.sample_timesteps(k_t, b, cfg.timestep_sampling, shift=cfg.shift,
                                 logit_mean=cfg.logit_mean, logit_std=cfg.logit_std,
                                 t_min=cfg.t_min, t_full=cfg.t_full)  # [b], [b]
    z = jax.random.normal(k_z, x.shape, jnp.float32)  # [b, f, h, w, C]
    keep_text = jax.random.uniform(k_drop, (b,)) >= cfg.text_drop_prob  # [b]
    # Folded in (not a 4th split) so t, z and the text mask stay what they were.
    cond_keys = jax.random.split(jax.random.fold_in(rng, _COND_DROP_STREAM), b)  # [b, key]
    own = jax.random.uniform(jax.random.fold_in(rng, _SELF_STATE_STREAM), (b,))  # [b]
    return {"t": t, "u": u, "z": z, "keep_text": keep_text, "cond_keys": cond_keys, "self": own}


def make_loss_fn(model, cfg: StepConfig, train: bool = True):
    """loss(trainable, frozen, inputs, draws) -> scalar mean flow loss over the examples (the
    configured ``loss`` on frames ``loss_from_frame``.., optionally bell-weighted).

    ``train``: latent drop of the condition tokens (the model's ``cond_drop``) is on, with the
    per-example keys of ``draws``; evaluation passes False and sees every token.
    """
    per_example = make_example_losses(model, cfg, train)

    def loss_fn(trainable, frozen, inputs, draws):
        losses = per_example(trainable, frozen, inputs, draws)  # [b]
        if cfg.bell_weighting:
            losses = losses * flow.bell_weight(draws["u"])
        return losses.mean()
    return loss_fn


def make_example_losses(model, cfg: StepConfig, train: bool = True):
    """losses(trainable, frozen, inputs, draws) -> [b]: each example's loss (in training, with
    the tokens new since the first view weighted by ``new_content_weight``; evaluation scores
    every token alike)."""
    drop = train and getattr(model.config, "cond_drop", 0.0) > 0
    weigh_new = train and cfg.new_content_weight != 1.0
    own_states = train and cfg.self_state > 0

    def losses_fn(trainable, frozen, inputs, draws):
        params = merge_params(trainable, frozen)
        x, t = inputs["x"], draws["t"]
        x_t = flow.add_noise(x, draws["z"], t)  # [b, f, h, w, C]
        text = jnp.where(_per_example(draws["keep_text"], inputs["text"]), inputs["text"], 0.0)
        kwargs = {k: inputs[k] for k in ("cam_latents", "content_latents", "first_frame",
                                         "image_embeds") if k in inputs}
        if drop:
            kwargs["cond_drop_key"] = draws["cond_keys"]
        if own_states:
            x_t = self_states(lambda x_in, t_in: model.apply(
                {"params": params}, x_in, flow.model_timesteps(t_in), text, **kwargs),
                x, x_t, t, draws, cfg)  # [b, f, h, w, C]
        v = model.apply({"params": params}, x_t, flow.model_timesteps(t), text, **kwargs)
        weight = None
        if weigh_new:
            if "in_first_view" not in inputs:
                raise ValueError("objective.new_content_weight needs the batch's in_first_view "
                                 "(what the first frame showed), which only the wallpaper "
                                 "source (data.kind='wallpaper') gives")
            seen = inputs["in_first_view"]  # [b, f, h, w] fraction of each token seen in frame 0
            weight = seen + cfg.new_content_weight * (1.0 - seen)  # [b, f, h, w]
        return flow.example_losses(v, x_t, x, draws["z"], t, cfg.loss, cfg.loss_from_frame,
                                   weight)
    return losses_fn


def self_states(velocity, x, x_t, t, draws, cfg: StepConfig):
    """x_t with a ``cfg.self_state`` fraction of examples replaced by the sampler's state at t:
    one Euler step x_hi + (t - t_hi) v(x_hi, t_hi) from the fresh noisy x_hi at t_hi = min(1,
    t + self_state_dt), v the model's velocity with its gradient stopped (draws "self": [b]
    uniforms pick the examples).

    velocity: (x_in [b, f, h, w, C], t_in [b]) -> [b, f, h, w, C]; x, x_t: [b, f, h, w, C].
    """
    t_hi = jnp.minimum(t + cfg.self_state_dt, 1.0)  # [b]
    x_hi = flow.add_noise(x, draws["z"], t_hi)  # [b, f, h, w, C]
    v_hi = jax.lax.stop_gradient(velocity(x_hi, t_hi))  # [b, f, h, w, C]
    step = _per_example(t - t_hi, x)  # [b, 1, 1, 1, 1] (<= 0)
    own = x_hi + step * v_hi.astype(x_hi.dtype)  # [b, f, h, w, C] the sampler's state
    pick = _per_example(draws["self"] < cfg.self_state, x_t)  # [b, 1, 1, 1, 1]
    return jnp.where(pick, own, x_t)


def _micro_batches(tree, n: int, constrain: Callable):
    """[b, ...] leaves -> [n, b/n, ...]; micro-batch i holds examples i, i+n, i+2n, ... so each
    stays spread over the data-parallel devices."""
    def split(x):
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} does not split into {n} micro-batches")
        y = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)  # [n, b/n, ...]
        return constrain(y)
    return jax.tree_util.tree_map(split, tree)


def make_train_step(model, tx: optax.GradientTransformation, cfg: StepConfig, *, codec=None,
                    batch_constraint: Callable[[Any], Any] | None = None,
                    learning_rate: Callable | None = None):
    """The step function (state, frozen, batch) -> (state, metrics); jit it outside.

    ``batch_constraint`` maps a [n, b/n, ...] micro-batch array to itself with a sharding
    constraint (batch on axis 1); ``learning_rate`` (a schedule) is reported in the metrics.
    """
    cfg.validate()
    loss_fn = make_loss_fn(model, cfg)
    grad_fn = jax.value_and_grad(loss_fn)
    constrain = batch_constraint or (lambda y: y)

    def step_fn(state, frozen, batch):
        inputs = model_inputs(batch, model.config, codec, cfg.text_len, cfg.conditioning,
                              cfg.v2v_first_frame)
        rng = jax.random.fold_in(state["rng"], state["step"])
        draws = _draw(rng, inputs["x"], cfg)
        params = state["params"]
        if cfg.accum_steps == 1:
            loss, grads = grad_fn(params, frozen, inputs, draws)
        else:
            micro = _micro_batches((inputs, draws), cfg.accum_steps, constrain)

            def body(carry, mb):
                loss_i, grads_i = grad_fn(params, frozen, *mb)
                return jax.tree_util.tree_map(jnp.add, carry, (loss_i, grads_i)), None

            zeros = (jnp.zeros((), jnp.float32),
                     jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
            (loss, grads), _ = jax.lax.scan(body, zeros, micro)
            loss, grads = jax.tree_util.tree_map(lambda g: g / cfg.accum_steps, (loss, grads))
        grad_norm = _tree_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new = {"params": optax.apply_updates(params, updates), "opt_state": opt_state}
        if state["ema"] is not None:
            d = cfg.ema_decay
            new["ema"] = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, state["ema"],
                                                new["params"])
        else:
            new["ema"] = None
        keep = lambda a, b: jnp.where(finite, a, b)  # drop a non-finite update
        new = {k: jax.tree_util.tree_map(keep, v, state[k]) for k, v in new.items()}
        new.update(step=state["step"] + 1, rng=state["rng"])
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite.astype(jnp.int32)}
        if learning_rate is not None:
            metrics["learning_rate"] = learning_rate(state["step"])
        return new, metrics

    return step_fn


def make_eval_losses(model, cfg: StepConfig, *, codec=None, noise_levels=()):
    """Validation losses (trainable, frozen, batch, rng) -> {name: [b]} per example, each the
    configured loss averaged over fixed noise levels (``noise_levels``; empty: the 4 mid-points
    of [0, 1]) with noise from ``rng``, so they are deterministic and comparable across steps:

      "loss"        with every input the model takes;
      "no_camera"   with the camera reference zeroed (models with references);
      "no_content"  with the content reference zeroed (the same as "loss" on I2V examples).

    The reference-use gaps are "no_camera" - "loss" (and "no_content" - "loss" on V2V
    examples): how much worse the model does without what the reference carries."""
    losses_fn = make_example_losses(model, cfg, train=False)
    levels = tuple(noise_levels) or tuple((i + 0.5) / 4 for i in range(4))

    def eval_fn(trainable, frozen, batch, rng):
        inputs = model_inputs(batch, model.config, codec, cfg.text_len, cfg.conditioning,
                              cfg.v2v_first_frame)
        x = inputs["x"]
        variants = {"loss": inputs}
        if "cam_latents" in inputs:
            variants["no_camera"] = {**inputs, "cam_latents": jnp.zeros_like(inputs["cam_latents"])}
            variants["no_content"] = {**inputs, "content_latents": jnp.zeros_like(
                inputs["content_latents"])}
        out = {name: jnp.zeros(x.shape[:1], jnp.float32) for name in variants}
        for i, level in enumerate(levels):
            draws = _draw(jax.random.fold_in(rng, i), x, cfg)
            draws["t"] = jnp.full(x.shape[:1], level, jnp.float32)  # [b]
            draws["keep_text"] = jnp.ones(x.shape[:1], bool)
            for name, variant in variants.items():
                out[name] = out[name] + losses_fn(trainable, frozen, variant, draws) / len(levels)
        return out

    return eval_fn


def eval_sums(losses: dict, task) -> dict:
    """Scalar sums of one validation batch (device side, so a multi-process run reduces them
    there): the loss sum and example count, and per task the camera gaps and (V2V) the content
    gaps. ``losses``: ``make_eval_losses``'s {name: [b]}; task [b] (0 I2V, 1 V2V)."""
    v2v = (task == tasks.V2V).astype(jnp.float32)  # [b]
    out = {"loss": losses["loss"].sum(), "n": jnp.float32(task.shape[0]),
           "n_v2v": v2v.sum()}
    if "no_camera" in losses:
        gap = losses["no_camera"] - losses["loss"]  # [b]
        out.update(camera_gap_i2v=(gap * (1.0 - v2v)).sum(), camera_gap_v2v=(gap * v2v).sum(),
                   content_gap=((losses["no_content"] - losses["loss"]) * v2v).sum())
    return out


def eval_metrics(sums: list[dict]) -> dict:
    """The validation metrics from ``eval_sums`` of every batch: val_loss and, for models with
    references, val_camera_gap (all examples), its I2V and V2V parts, val_content_gap (V2V)."""
    total = {k: float(sum(float(s[k]) for s in sums)) for k in sums[0]}
    n, n_v2v = total["n"], total["n_v2v"]
    out = {"val_loss": total["loss"] / n}
    if "camera_gap_i2v" in total:
        ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731 (no such examples)
        out.update(val_camera_gap=(total["camera_gap_i2v"] + total["camera_gap_v2v"]) / n,
                   val_camera_gap_i2v=ratio(total["camera_gap_i2v"], n - n_v2v),
                   val_camera_gap_v2v=ratio(total["camera_gap_v2v"], n_v2v),
                   val_content_gap=ratio(total["content_gap"], n_v2v))
    return out
