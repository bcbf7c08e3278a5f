"""Sampling the rectified flow: timestep schedules, Euler and UniPC solvers, guidance, the loop.

Everything here is a pure function of a ``velocity_fn(x, timestep, sigma) -> v`` (x the noisy
latents at noise level sigma in [0, 1], timestep the model's 0-1000 value); nothing knows the
DiT. ``camclone_jax.inference.denoise`` builds the velocity function from the model.

Schedules (``make_schedule``): N noise levels sigma_0 = 1 > ... > sigma_{N-1} > sigma_N = 0,
each the flow-matching shift sigma(u) = s u / (1 + (s - 1) u) of a linearly spaced u:

  "release"          u = linspace(1, 0, N + 1)[:-1]: the public CamCloneMaster / DiffSynth
                     sampler (FlowMatchScheduler with extra_one_step); timestep = 1000 sigma.
  "diffusers"        u = linspace(1, sigma(1/1000), N): diffusers' FlowMatchEulerDiscreteScheduler
                     (it spaces between the already shifted ends of its training grid, then
                     shifts again); timestep = 1000 sigma.
  "diffusers_unipc"  u = linspace(1, 1/1000, N + 1)[:-1], sigma_0 lowered by 1e-6, timesteps
                     floor(1000 sigma) as integers: diffusers' UniPCMultistepScheduler in flow
                     mode and Wan's own FlowUniPCMultistepScheduler.

Solvers (``SOLVERS``):
  "euler"  x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i, first order (the release's sampler).
  "unipc"  UniPC (Zhao et al. 2023), B(h) = e^h - 1 ("bh2", the default) or h ("bh1"),
           multistep predictor of order ``order`` plus the UniC corrector, on the data
           prediction m = x - sigma v with alpha = 1 - sigma, lambda = log(alpha / sigma);
           lower orders for the first steps (warm-up) and the last ones. It is the same
           algorithm as diffusers' UniPCMultistepScheduler(prediction_type="flow_prediction",
           use_flow_sigmas=True): equal results for the same schedule, to float rounding.
           Every UniPC coefficient depends on the schedule alone, so they are computed once on
           the host in float64 (``solver_tables``) and the loop only forms linear combinations.

Guidance (``guided_velocity``): classifier-free guidance v = v_u + s (v_c - v_u) with the
conditional and unconditional inputs batched into one model call (or two calls, for half the
activation memory); scale 1 skips the unconditional half and returns the conditional
prediction itself.

Frame replacement (``Replacement``): optional pinned latent frames, set at every step to
(1 - sigma) known + sigma noise and to ``known`` at the end; the inference pipeline uses it to
condition on a first frame with models that have no first-frame channels.

The loop (``sample_loop``) is one ``lax.fori_loop``: inside a ``jax.jit`` it compiles once for
all steps and every call of the same shapes; ``progress`` is called with the finished step
count through ``jax.debug.callback``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

SPACINGS = ("release", "diffusers", "diffusers_unipc")
SOLVERS = ("euler", "unipc")
UNIPC_VARIANTS = ("bh1", "bh2")
NUM_TRAIN_TIMESTEPS = 1000
_UNIPC_SIGMA_EPS = 1e-6  # sigma_0 = 1 would make lambda_0 = -inf


def shift_sigma(u, shift: float):
    """Flow-matching timestep shift sigma(u) = s u / (1 + (s - 1) u) (numpy, float64-safe)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Noise levels and model timesteps of one sampling run.

    sigmas: [N + 1] float32, decreasing from ~1 to exactly 0 (the last is the terminal level).
    timesteps: [N] float32 on the DiT's 0-1000 scale, the value the model sees at step i.
    """

    sigmas: np.ndarray
    timesteps: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def make_schedule(num_steps: int, shift: float = 5.0, spacing: str = "release") -> Schedule:
    """The N-step shifted schedule of ``spacing`` (see the module docstring for the rules)."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown schedule spacing {spacing!r}; choose from {SPACINGS}")
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    if not shift > 0:
        raise ValueError(f"shift must be positive, got {shift}")
    n, T = int(num_steps), NUM_TRAIN_TIMESTEPS
    if spacing == "release":
        sigmas = shift_sigma(np.linspace(1.0, 0.0, n + 1)[:-1], shift)  # [N] float64
        timesteps = sigmas.astype(np.float32) * T
    elif spacing == "diffusers":
        # diffusers keeps its extremes in float32 (sigma_max = 1, sigma_min = sigma(1/1000)).
        lo = float(np.float32(shift_sigma(np.float32(1.0 / T), shift)))
        sigmas = shift_sigma(np.linspace(1.0 * T, lo * T, n) / T, shift)  # [N] float64
        timesteps = sigmas.astype(np.float32) * T
    else:
        sigmas = shift_sigma(np.linspace(1.0, 1.0 / T, n + 1)[:-1], shift)  # [N] float64
        if abs(sigmas[0] - 1.0) < _UNIPC_SIGMA_EPS:
            sigmas[0] -= _UNIPC_SIGMA_EPS
        timesteps = np.floor(sigmas * T)  # diffusers / Wan cast these to int64
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)  # [N + 1]
    return Schedule(sigmas=sigmas, timesteps=np.asarray(timesteps, np.float32))


# ------------------------------------------------------------------------------ solver tables
def _lambda(sigma):
    """UniPC's log-SNR lambda = log(alpha / sigma), alpha = 1 - sigma (float64; +inf at 0)."""
    with np.errstate(divide="ignore"):
        return np.log1p(-sigma) - np.log(sigma)


def _unipc_b(h: float, order: int, variant: str):
    """B(h) and the right-hand side b_1..b_p of UniPC's order conditions (data prediction)."""
    hh = -h
    with np.errstate(divide="ignore", invalid="ignore"):
        h_phi_1 = np.expm1(hh)  # e^{-h} - 1
        b_h = hh if variant == "bh1" else np.expm1(hh)
        h_phi_k, fact, b = h_phi_1 / hh - 1.0, 1, []
        for i in range(1, order + 1):
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
    return h_phi_1, b_h, np.asarray(b)


def _unipc_update(sig, lam, s: int, t: int, past: list[int], order: int, corrector: bool,
                  variant: str):
    """Coefficients of one UniPC update from level ``s`` to level ``t``.

    The update is x_t = (sigma_t / sigma_s) x_s + sum_j w_j m_j over the data predictions at
    levels [s, past...] (predictor) or [t, s, past...] (corrector, which also uses m_t).
    Returns (x coefficient, weights).
    """
    alpha_t = 1.0 - sig[t]
    h = lam[t] - lam[s]
    h_phi_1, b_h, b = _unipc_b(h, order, variant)
    r = np.array([(lam[k] - lam[s]) / h for k in past[:order - 1]])  # [p - 1]
    rks = np.concatenate([r, [1.0]])  # [p]
    if corrector:
        if order == 1:
            rho = np.array([0.5])
        else:
            rho = np.linalg.solve(np.stack([rks ** j for j in range(order)]), b)  # [p]
    elif order == 1:
        rho = np.zeros(0)
    elif order == 2:
        rho = np.array([0.5])
    else:
        rho = np.linalg.solve(np.stack([rks ** j for j in range(order)])[:-1, :-1], b[:-1])
    # sum_k rho_k (m_k - m_s) / r_k (+ rho_last (m_t - m_s) for the corrector)
    w_past = -alpha_t * b_h * rho[:order - 1] / r  # [p - 1]
    w_s = -alpha_t * h_phi_1 - w_past.sum()
    weights = [w_s, *w_past]
    if corrector:
        w_t = -alpha_t * b_h * rho[-1]
        weights = [w_t, weights[0] - w_t, *w_past]
    return sig[t] / sig[s], np.asarray(weights)


def solver_tables(schedule: Schedule, solver: str = "euler", order: int = 2,
                  variant: str = "bh2") -> dict[str, np.ndarray]:
    """Per-step constants of a solver on a schedule (float32 numpy arrays, leading axis N).

    euler: sigma [N], timestep [N], dt [N] = sigma_{i+1} - sigma_i.
    unipc: also hist_sigma; corrector weights on (x_i, x_last) ``cx`` [N, 2] and on the data
    predictions [m_i, m_{i-1}, ..., m_{i-order}] ``cw`` [N, order + 1]; predictor weight on the
    corrected x ``px`` [N] and on [m_i, ..., m_{i-order}] ``pw`` [N, order + 1].
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {SOLVERS}")
    sig32 = np.asarray(schedule.sigmas, np.float32)
    n = schedule.num_steps
    tables = {"sigma": sig32[:-1], "timestep": np.asarray(schedule.timesteps, np.float32)}
    if solver == "euler":
        tables["dt"] = sig32[1:] - sig32[:-1]  # [N], float32 as diffusers subtracts
        return tables
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; choose from {UNIPC_VARIANTS}")
    if not 1 <= order <= 3:
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    sig = sig32.astype(np.float64)
    sig[0] = min(sig[0], 1.0 - _UNIPC_SIGMA_EPS)
    lam = _lambda(sig)
    k = order + 1
    cx, cw = np.zeros((n, 2)), np.zeros((n, k))
    px, pw = np.zeros(n), np.zeros((n, k))
    orders = [min(order, n - i, i + 1) for i in range(n)]  # warm-up and lower_order_final
    for i in range(n):
        if i == 0:
            cx[i, 0] = 1.0  # no corrector before the first model output
        else:
            p = orders[i - 1]
            a, w = _unipc_update(sig, lam, i - 1, i, list(range(i - 2, -1, -1)), p, True, variant)
            cx[i, 1], cw[i, :len(w)] = a, w
        p = orders[i]
        a, w = _unipc_update(sig, lam, i, i + 1, list(range(i - 1, -1, -1)), p, False, variant)
        px[i], pw[i, :len(w)] = a, w
    tables.update(hist_sigma=sig[:-1].astype(np.float32), cx=cx.astype(np.float32),
                  cw=cw.astype(np.float32), px=px.astype(np.float32), pw=pw.astype(np.float32))
    return tables


# ------------------------------------------------------------------------------ solver steps
def init_state(x, solver: str = "euler", order: int = 2) -> dict:
    """The loop carry of ``solver`` for initial latents x (pure noise)."""
    x = jnp.asarray(x, jnp.float32)
    if solver == "euler":
        return {"x": x}
    return {"x": x, "x_last": jnp.zeros_like(x),
            "hist": jnp.zeros((order,) + x.shape, jnp.float32)}  # [order, *x.shape]


def _weighted(w, stack):
    """sum_j w[j] stack[j] for w [k] and stack [k, ...]."""
    return jnp.tensordot(w, stack, axes=1)


def solver_step(state: dict, tables: dict, i, v, solver: str = "euler") -> dict:
    """Advances the carry by step i given the velocity v at state["x"]."""
    x = state["x"]
    v = v.astype(jnp.float32)
    if solver == "euler":
        return {"x": x + tables["dt"][i] * v}
    m = x - tables["hist_sigma"][i] * v  # data prediction
    preds = jnp.concatenate([m[None], state["hist"]])  # [order + 1, ...]: m_i, m_{i-1}, ...
    cx, cw = tables["cx"][i], tables["cw"][i]
    x_c = cx[0] * x + cx[1] * state["x_last"] + _weighted(cw, preds)  # UniC corrector
    x_next = tables["px"][i] * x_c + _weighted(tables["pw"][i], preds)  # UniP predictor
    return {"x": x_next, "x_last": x_c, "hist": preds[:-1]}


# ------------------------------------------------------------------------------- guidance
def cfg_combine(v_cond, v_uncond, scale):
    """Classifier-free guidance: v_u + scale (v_c - v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


def guided_velocity(model_fn: Callable, x, timestep, cond, uncond=None, scale=1.0, *,
                    batched: bool = True):
    """Guided velocity from one batched model call (or two, ``batched=False``).

    model_fn(x [n, ...], timestep, context) -> v [n, ...]; ``cond`` / ``uncond`` are pytrees
    whose leaves have a leading batch axis equal to x's. With ``uncond`` None (or a Python
    scale of exactly 1) only the conditional prediction is computed and returned as is;
    otherwise [cond; uncond] run as one batch of 2n (shardable over data-parallel devices) or,
    unbatched, as two calls of n (half the activation memory, the same work), and are combined
    by ``cfg_combine``.
    """
    if uncond is None or (isinstance(scale, (int, float)) and scale == 1.0):
        return model_fn(x, timestep, cond)
    if not batched:
        return cfg_combine(model_fn(x, timestep, cond), model_fn(x, timestep, uncond), scale)
    n = x.shape[0]
    both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u]), cond, uncond)
    v = model_fn(jnp.concatenate([x, x]), timestep, both)  # [2n, ...]
    return cfg_combine(v[:n], v[n:], scale)


# ------------------------------------------------------------------------------- the loop
@dataclasses.dataclass(frozen=True)
class Replacement:
    """Latent frames pinned to known values: where ``mask`` is 1 the sample is set to
    (1 - sigma) known + sigma noise before every model call and to ``known`` at the end.

    known, noise: shaped like the latents; mask: broadcastable to them (e.g. [1, f, 1, 1, 1]).
    """

    known: jax.Array
    noise: jax.Array
    mask: jax.Array

    def at(self, x, sigma):
        pinned = (1.0 - sigma) * self.known + sigma * self.noise
        return jnp.where(self.mask > 0, pinned.astype(x.dtype), x)


jax.tree_util.register_dataclass(Replacement, data_fields=["known", "noise", "mask"],
                                 meta_fields=[])


def sample_loop(velocity_fn: Callable, x_init, tables: dict, *, solver: str = "euler",
                order: int = 2, replacement: Replacement | None = None,
                progress: Callable[[int], None] | None = None):
    """Integrates the flow from pure noise ``x_init`` (sigma_0) to sigma_N = 0.

    velocity_fn(x, timestep, sigma) -> v with x [b, ...] float32; tables from
    ``solver_tables`` (numpy or jax arrays; the step count is their length). One
    ``lax.fori_loop`` over the steps; ``progress(steps_done)`` runs on the host after each step.
    Returns the final latents (float32).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {SOLVERS}")
    tables = {k: jnp.asarray(v) for k, v in tables.items()}
    n = tables["sigma"].shape[0]

    def body(i, state):
        sigma = tables["sigma"][i]
        x = state["x"]
        if replacement is not None:
            x = replacement.at(x, sigma)
            state = {**state, "x": x}
        v = velocity_fn(x, tables["timestep"][i], sigma)  # [b, ...]
        state = solver_step(state, tables, i, v, solver)
        if progress is not None:
            jax.debug.callback(progress, i + 1)
        return state

    state = jax.lax.fori_loop(0, n, body, init_state(x_init, solver, order))
    x = state["x"]
    if replacement is not None:
        x = replacement.at(x, jnp.float32(0.0))
    return x


def sample(velocity_fn: Callable, noise, schedule: Schedule, *, solver: str = "euler",
           order: int = 2, variant: str = "bh2", replacement: Replacement | None = None):
    """Convenience: ``sample_loop`` with the tables of ``schedule`` (no jit of its own)."""
    return sample_loop(velocity_fn, noise, solver_tables(schedule, solver, order, variant),
                       solver=solver, order=order, replacement=replacement)


def default_spacing(solver: str) -> str:
    """The schedule spacing each solver is normally run with: the release's for Euler, Wan's
    (diffusers UniPC) for UniPC."""
    return "release" if solver == "euler" else "diffusers_unipc"
