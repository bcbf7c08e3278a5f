"""The CamClone DiT: Wan 2.1's video transformer with reference videos joined as extra tokens.

Inputs are channels-last latents ``[batch, frames, height, width, channels]``. For CamClone the
camera-reference and content-reference latents (same shape as the target) are appended after the
noisy target along the frame axis, so the 3D self-attention sees [x_t | x_cam | x_cont]; one
timestep modulates every token; the prediction is sliced back to the target frames. With no
references the model is plain Wan 2.1 (T2V, or I2V with ``first_frame`` and ``image_embeds``),
numerically equal to diffusers' ``WanTransformer3DModel``.

Cost-cutting options (``DiTConfig.cam_downsample``, ``cond_drop``, ``cond_attention``; all off
by default) shrink or sparsify the condition tokens. The sequence is built per segment
(``input_segments``, ``rope.Segment``, ``rope.segment_rope``): each is patchified on its own grid with its
own RoPE positions, then the token lists are joined (with every option off this is the same
sequence and the same tables as patchifying the frame-concatenated video). With block-sparse
condition attention the condition tokens' keys/values do not depend on the noisy target or the
timestep, so sampling computes them once (``DiT.build_cond_cache``) and each denoising step
runs the target tokens only (``DiT(...)(latents, t, text, cond_cache=cache)``).

Top-level parameter paths: ``patch_embedding/{kernel,bias}`` (kernel [pt, ph, pw, c_in, dim]),
``time_embedding/{fc1,fc2}``, ``time_projection``, ``text_embedding/{fc1,fc2}``,
``img_emb/{norm_in,mlp/fc1,mlp/fc2,norm_out}`` (I2V), ``blocks/...`` (stacked over layers, see
blocks.py), ``head/modulation`` [2, dim] and ``head/proj``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from camclone_jax.models.blocks import ACT, TokenLayout, WanBlock
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.layers import MLP, AffineLayerNorm, dense, modulate, sinusoidal_embedding
from camclone_jax.models.rope import Segment, segment_rope

# prediction "sample": v = (x_t - x) / max(t, SAMPLE_T_FLOOR), so the velocity stays bounded near
# t = 0 (the training loss reads x back with the same floor, diffusion.flow.example_losses)
SAMPLE_T_FLOOR = 0.05


def skip_weight(t, sigma: float):
    """c_skip of prediction "skip" at flow time t (any shape): for x_t = (1 - t) x + t z with x
    of std ``sigma``, c_skip x_t is the least-squares linear guess of x (EDM's c_skip)."""
    s2 = sigma ** 2
    return (1.0 - t) * s2 / ((1.0 - t) ** 2 * s2 + t ** 2)

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _shape_error(what: str, got, expected: str):
    return ValueError(f"{what} has shape {tuple(got)}, expected {expected}")


def _target_input(cfg: DiTConfig, latents, first_frame):
    """Validates the noisy target (+ I2V first-frame channels) -> [b, f, h, w, in_channels]."""
    if latents.ndim != 5 or latents.shape[-1] != cfg.out_channels:
        raise _shape_error("latents", latents.shape,
                           f"(batch, frames, height, width, {cfg.out_channels})")
    b, f, h, w, _ = latents.shape
    pt, ph, pw = cfg.patch_size
    if f % pt or h % ph or w % pw:
        raise ValueError(f"latents shape {tuple(latents.shape)}: frames, height, width "
                         f"({f}, {h}, {w}) must be divisible by the patch size {cfg.patch_size}")
    if cfg.cond_channels:
        want = (b, f, h, w, cfg.cond_channels)
        if first_frame is None or tuple(first_frame.shape) != want:
            got = None if first_frame is None else tuple(first_frame.shape)
            raise ValueError(f"this I2V model needs first_frame of shape {want} (first-frame mask "
                             f"and latent channels), got {got}")
        first_frame = first_frame.astype(latents.dtype)
        return jnp.concatenate([latents, first_frame], -1)  # [b, f, h, w, c_in]
    if first_frame is not None:
        raise ValueError("first_frame was given but the model has no first-frame channels "
                         f"(in_channels {cfg.in_channels} == out_channels {cfg.out_channels})")
    return latents


def reference_inputs(cfg: DiTConfig, shape, cam_latents, content_latents=None, dtype=None):
    """The camera and content reference segments, channel-padded to ``in_channels``.

    ``shape`` is the target latents' shape, which both references must have; a missing content
    reference is all zeros (I2V). The camera reference is average-pooled spatially by
    ``cam_downsample``. Returns [cam [b, f, h/k, w/k, c_in], content [b, f, h, w, c_in]].
    """
    shape = tuple(shape)
    dtype = dtype or cam_latents.dtype
    k = int(cfg.cam_downsample)
    if k > 1 and (shape[2] % (k * cfg.patch_size[1]) or shape[3] % (k * cfg.patch_size[2])):
        raise ValueError(f"cam_downsample={k}: latent height and width {shape[2:4]} must be "
                         f"multiples of {k} x the patch size {cfg.patch_size[1:]}")
    refs = []
    for name, ref in (("cam_latents", cam_latents), ("content_latents", content_latents)):
        if ref is None:
            ref = jnp.zeros(shape, dtype)  # I2V: all-zero content reference
        if tuple(ref.shape) != shape:
            raise ValueError(f"{name} shape {tuple(ref.shape)} differs from the target latents "
                             f"shape {shape}")
        ref = ref.astype(dtype)
        if name == "cam_latents" and k > 1:
            ref = pool_spatial(ref, k)  # [b, f, h/k, w/k, c]
        pad = [(0, 0)] * 4 + [(0, cfg.cond_channels)]
        refs.append(jnp.pad(ref, pad))  # [b, f, h', w', c_in]
    return refs


def input_segments(cfg: DiTConfig, latents, cam_latents=None, content_latents=None,
                   first_frame=None):
    """Validates the inputs and returns the patch-embedding input of each sequence segment.

    Returns a list of [b, f, h_i, w_i, patch_in_channels] arrays: [target] for plain Wan (no
    references) and for channel concatenation (references joined on the channel axis), else
    [target, camera reference, content reference], to be laid end to end along the frames.
    """
    target = _target_input(cfg, latents, first_frame)  # [b, f, h, w, c_in]
    if cam_latents is None and content_latents is not None:
        raise ValueError("content_latents needs cam_latents (pass zeros for no camera reference)")
    if cam_latents is None and cfg.concat == "frame":
        return [target]  # plain Wan: no reference segments
    refs = reference_inputs(cfg, latents.shape, cam_latents, content_latents, latents.dtype)
    if cfg.concat == "channel":
        return [jnp.concatenate([target, *refs], axis=-1)]  # [b, f, h, w, 3 c_in]
    return [target, *refs]


def pool_spatial(x, k: int):
    """Average pool of height and width by k: [b, f, h, w, c] -> [b, f, h/k, w/k, c]."""
    b, f, h, w, c = x.shape
    return x.reshape(b, f, h // k, k, w // k, k, c).mean(axis=(3, 5))


def _join(parts, axis: int):
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)


def kept_tokens(n: int, drop: float) -> int:
    """Tokens of an n-token segment that latent drop keeps: round((1 - drop) n), at least 1."""
    return max(1, n - int(round(drop * n)))


def _example_keys(key, b: int):
    """One PRNG key per example: a single key is split, per-example keys [b, ...] pass."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key.ndim == (0 if typed else 1):
        return jax.random.split(key, b)
    if key.shape[0] != b:
        raise ValueError(f"cond_drop_key holds {key.shape[0]} keys for a batch of {b}")
    return key


def drop_tokens(keys, tokens, cos, sin, keep: int):
    """A random subset of ``keep`` tokens per example, in their original order.

    keys: per-example PRNG keys; tokens [b, n, p]; cos, sin [n, d/2]. Returns tokens
    [b, keep, p] and per-example tables [b, keep, d/2] (positions travel with the tokens).
    """
    n = tokens.shape[1]
    scores = jax.vmap(lambda k: jax.random.uniform(k, (n,)))(keys)  # [b, n]
    idx = jnp.sort(jax.lax.top_k(scores, keep)[1], axis=-1)  # [b, keep]
    tokens = jnp.take_along_axis(tokens, idx[..., None], axis=1)  # [b, keep, p]
    return tokens, cos[idx], sin[idx]  # [b, keep, p], [b, keep, d/2] x2


def token_sequence(cfg: DiTConfig, arrays, first: int, target_frames: int, cond_drop_key=None):
    """Patchifies consecutive segments, lays them end to end with their RoPE tables, and
    applies latent drop to the reference segments when ``cond_drop_key`` is given.

    Args:
      arrays: patch-embedding inputs [b, f, h_i, w_i, c] of segments ``first``, ``first`` + 1,
        ... (0 target, 1 camera reference, 2 content reference).
      target_frames: token frames of the target; segment i starts at temporal position
        i * target_frames (the release's positions); the camera reference has RoPE stride
        ``cam_downsample`` in height and width.
    Returns:
      tokens [b, L, pt*ph*pw*c]; cos, sin [L, d/2] (per example, [b, L, d/2], after latent
      drop); the token count of each segment; the ``Segment`` of each.
    """
    b = arrays[0].shape[0]
    tokens, tables, segments = [], [], []
    for index, a in enumerate(arrays, start=first):
        tok, grid = patchify(a.astype(cfg.dtype), cfg.patch_size)  # [b, n_i, pt*ph*pw*c]
        seg = Segment(grid, t0=target_frames * index,
                      stride=int(cfg.cam_downsample) if index == 1 else 1)
        cs = segment_rope([seg], cfg.head_dim, cfg.rope_theta, cfg.rope_max_seq_len)  # [n_i, d/2]
        if cond_drop_key is not None and cfg.cond_drop > 0 and index > 0:
            keys = jax.vmap(lambda k, i=index: jax.random.fold_in(k, i))(
                _example_keys(cond_drop_key, b))  # this segment's per-example keys
            tok, *cs = drop_tokens(keys, tok, *cs, kept_tokens(tok.shape[1], cfg.cond_drop))
        tokens.append(tok)  # [b, n_i', p]
        tables.append(cs)  # [(b,) n_i', d/2] x2
        segments.append(seg)
    if any(c.ndim == 3 for c, _ in tables):  # some tables per example: make them all so
        tables = [[jnp.broadcast_to(c, (b,) + c.shape[-2:]) for c in cs] for cs in tables]
    cos = _join([c for c, _ in tables], -2)  # [(b,) L, d/2]
    sin = _join([s for _, s in tables], -2)  # [(b,) L, d/2]
    return _join(tokens, 1), cos, sin, [t.shape[1] for t in tokens], segments


def sequence_lengths(cfg: DiTConfig, latent_shape, train: bool = False) -> dict[str, int]:
    """Tokens per segment (target, cam, content) for target latents of ``latent_shape``
    [b, f, h, w, c] with references, with the cost-cutting options of ``cfg``; ``train``
    applies latent drop (which sampling does not)."""
    _, f, h, w, _ = latent_shape
    pt, ph, pw = cfg.patch_size
    k = int(cfg.cam_downsample) if cfg.concat == "frame" else 1
    grids = {"target": (f // pt, h // ph, w // pw), "cam": (f // pt, h // (ph * k), w // (pw * k)),
             "content": (f // pt, h // ph, w // pw)}
    if cfg.concat == "channel":
        return {"target": math.prod(grids["target"]), "cam": 0, "content": 0}
    out = {name: math.prod(g) for name, g in grids.items()}
    if train and cfg.cond_drop > 0:
        for name in ("cam", "content"):
            out[name] = kept_tokens(out[name], cfg.cond_drop)
    return out


def patchify(x, patch):
    """[b, f, h, w, c] -> ([b, f'*h'*w', pt*ph*pw*c], (f', h', w')), channel fastest."""
    b, f, h, w, c = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # [b, f', h', w', pt, ph, pw, c]
    grid = (f // pt, h // ph, w // pw)
    return x.reshape(b, math.prod(grid), pt * ph * pw * c), grid


def unpatchify(x, grid, patch, channels):
    """[b, f'*h'*w', pt*ph*pw*c] -> [b, f, h, w, c]."""
    b = x.shape[0]
    (f, h, w), (pt, ph, pw) = grid, patch
    x = x.reshape(b, f, h, w, pt, ph, pw, channels)
    x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)  # [b, f', pt, h', ph, w', pw, c]
    return x.reshape(b, f * pt, h * ph, w * pw, channels)


class DiT(nn.Module):
    """Wan 2.1 DiT with CamClone reference conditioning; see the module docstring."""

    config: DiTConfig

    def __call__(self, latents, timesteps, text_embeds, *, cam_latents=None,
                 content_latents=None, image_embeds=None, first_frame=None, cond_drop_key=None,
                 cond_cache=None):
        """Predicts the flow velocity of the target latents.

        Args:
          latents: noisy target [b, f, h, w, out_channels].
          timesteps: [b] or scalar, on Wan's 0-1000 scale.
          text_embeds: [b, text_len, text_dim] text-encoder output (padding rows included).
          cam_latents, content_latents: clean reference latents shaped like ``latents``; a
            missing content reference is all zeros (I2V). Both absent: plain Wan.
          image_embeds: [b, image_len, image_dim] CLIP tokens (I2V base only).
          first_frame: [b, f, h, w, in_channels - out_channels] first-frame mask and latent
            channels (I2V base only); see ``first_frame_condition``.
          cond_drop_key: turns latent drop (``cond_drop``) on, for training: one PRNG key, or
            one per example ([b] typed or [b, 2] raw keys). None (sampling): every token kept.
          cond_cache: the condition tokens' keys/values from ``build_cond_cache`` (block-sparse
            ``cond_attention`` only), in place of ``cam_latents`` / ``content_latents``: the
            step then runs the target tokens alone.
        Returns:
          velocity [b, f, h, w, out_channels], float32.
        """
        if cond_cache is not None:
            if self.config.cond_attention == "full":
                raise ValueError("cond_cache needs block-sparse condition attention "
                                 "(cond_attention 'joint' or 'segment'); with 'full' the "
                                 "condition tokens depend on the noisy target")
            if cam_latents is not None or content_latents is not None:
                raise ValueError("cond_cache replaces cam_latents/content_latents: pass one or "
                                 "the other")
            if cond_drop_key is not None:
                raise ValueError("latent drop (cond_drop_key) is for training; a cached "
                                 "sampling step keeps every condition token")
        return self._run(latents, timesteps, text_embeds, cam_latents, content_latents,
                         image_embeds, first_frame, cond_drop_key, cond_cache, build=False)

    def build_cond_cache(self, text_embeds, cam_latents, content_latents=None,
                         image_embeds=None):
        """Keys and values of the condition tokens in every layer, for cached sampling.

        Needs block-sparse ``cond_attention``: condition tokens then see only condition tokens
        and timestep 0, so this is all they depend on (the text and image context included, so
        guidance needs one cache per prompt). Arguments as in ``__call__``; ``cam_latents``
        has the target's shape.

        Returns:
          {"k": [b, num_layers, Lc, dim], "v": [b, num_layers, Lc, dim]} (compute dtype),
          batch first so caches of several prompts concatenate like any batched input.
        """
        if self.config.cond_attention == "full":
            raise ValueError("build_cond_cache needs block-sparse condition attention "
                             "(cond_attention 'joint' or 'segment')")
        if cam_latents is None:
            raise ValueError("build_cond_cache needs cam_latents")
        return self._run(None, None, text_embeds, cam_latents, content_latents, image_embeds,
                         None, None, None, build=True)

    @nn.compact
    def _run(self, latents, timesteps, text_embeds, cam_latents, content_latents, image_embeds,
             first_frame, cond_drop_key, cond_cache, *, build: bool):
        """The forward pass: velocity, or (``build``) the condition K/V cache."""
        cfg = self.config
        sparse = cfg.cond_attention != "full"

        # Segments: patch-embedding inputs with their token grids and RoPE positions.
        if build:
            b, f = cam_latents.shape[:2]
            arrays = reference_inputs(cfg, cam_latents.shape, cam_latents, content_latents)
            n_target = 0
        else:
            b, f = latents.shape[:2]
            arrays = input_segments(cfg, latents, cam_latents, content_latents, first_frame)
        tokens, cos, sin, lengths, segments = token_sequence(
            cfg, arrays, first=1 if build else 0, target_frames=f // cfg.patch_size[0],
            cond_drop_key=cond_drop_key)  # [b, L, p], [(b,) L, d/2] x2
        if not build:
            n_target = lengths[0]

        text_embeds = jnp.asarray(text_embeds)
        self._check_context(b, text_embeds, image_embeds)
        x = PatchEmbed(cfg, name="patch_embedding")(tokens)  # [b, L, dim]
        x = nn.with_logical_constraint(x, ACT)

        # Timestep: sinusoid -> MLP (float32) -> 6 modulation vectors per block.
        time_mlp = MLP(cfg.dim, cfg.dim, "silu", ("in", "mlp"), ("mlp", "embed"), "float32",
                       cfg.param_dtype, name="time_embedding")
        time_proj = dense(6 * cfg.dim, ("embed", "mod"), "time_projection", "float32",
                          cfg.param_dtype)

        def embed_time(t):  # [b] -> temb [b, dim], t_mod [b, 6, dim]
            temb = time_mlp(sinusoidal_embedding(t, cfg.freq_dim))  # [b, dim]
            return temb, time_proj(jax.nn.silu(temb)).reshape(b, 6, cfg.dim)

        temb = t_mod = t_mod_cond = None
        if not build:
            timesteps = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32), (b,))  # [b]
            if cfg.timestep_rounding == "bfloat16":  # the release's cast (models/config.py)
                timesteps = timesteps.astype(jnp.bfloat16).astype(jnp.float32)  # [b]
            temb, t_mod = embed_time(timesteps)
        has_cond = sum(lengths) > n_target
        if sparse and has_cond:  # condition tokens are clean: fixed timestep 0
            t_mod_cond = embed_time(jnp.zeros((b,), jnp.float32))[1]  # [b, 6, dim]

        context = MLP(cfg.dim, cfg.dim, "gelu_tanh", ("in", "mlp"), ("mlp", "embed"),
                      cfg.dtype, cfg.param_dtype, name="text_embedding")(
            text_embeds.astype(cfg.dtype))  # [b, text_len, dim]
        image_context = None
        if cfg.image_dim is not None:
            image_context = ImageEmbedding(cfg, name="img_emb")(image_embeds)  # [b, 257, dim]

        layout = None
        if sparse and (has_cond or cond_cache is not None):
            cond_lengths = lengths if build else lengths[1:]
            layout = TokenLayout(n_target, self._groups(n_target, cond_lengths), emit_kv=build)
        if cond_cache is not None:
            self._check_cache(cond_cache, b, latents.shape)
        # Whole-sequence grid for the 2D spatial attention (segments of one spatial size).
        grid = (sum(seg.grid[0] for seg in segments), *segments[0].grid[1:])
        inputs = (t_mod, context, image_context, cos, sin, t_mod_cond)
        blocks = self._blocks(grid, layout, cached=cond_cache is not None)
        if cond_cache is not None:
            x, _ = blocks(x, inputs, cond_cache)  # [b, L_target, dim]
        else:
            x, kv = blocks(x, inputs)  # [b, L, dim]
            if build:
                return kv  # {"k", "v"}: [b, layers, Lc, dim] each

        # Head: only the target tokens are predicted.
        x = x[:, :n_target]  # [b, L_target, dim]
        out = Head(cfg, name="head")(x, temb)  # [b, L_target, pt*ph*pw*c_out]
        out = unpatchify(out.astype(jnp.float32), segments[0].grid, cfg.patch_size,
                         cfg.out_channels)  # [b, f, h, w, c_out]
        if cfg.prediction in ("sample", "skip"):  # x-prediction -> velocity: v = (x_t - x) / t
            x_t = latents.astype(jnp.float32)  # [b, f, h, w, c]
            raw_t = (timesteps / 1000.0)[:, None, None, None, None]  # [b, 1, 1, 1, 1]
            if cfg.prediction == "skip":  # x = c_skip x_t + F: x_t passes through at low t
                out = skip_weight(raw_t, cfg.skip_sigma) * x_t + out  # [b, f, h, w, c_out]
            t = jnp.maximum(raw_t, SAMPLE_T_FLOOR)  # [b, 1, 1, 1, 1]
            out = (x_t - out) / t  # [b, f, h, w, c_out]
        return out

    def _groups(self, start: int, lengths) -> tuple[tuple[int, int], ...]:
        """Attention groups (start, length) of the condition segments, laid from ``start``."""
        if not lengths:
            return ()
        if self.config.cond_attention == "joint":
            return ((start, sum(lengths)),)
        groups = []
        for n in lengths:
            groups.append((start, n))
            start += n
        return tuple(groups)

    def _check_cache(self, cache, b: int, latent_shape):
        """Raises ValueError unless ``cache`` fits this model and these target latents."""
        cfg = self.config
        n = sequence_lengths(cfg, latent_shape)
        want = (b, cfg.num_layers, n["cam"] + n["content"], cfg.dim)
        for name in ("k", "v"):
            got = None if name not in cache else tuple(cache[name].shape)
            if got != want:
                raise ValueError(f"cond_cache[{name!r}] has shape {got}, expected {want} (batch, "
                                 "layers, condition tokens, dim) for these latents; build it with "
                                 "build_cond_cache from the same references")

    def _check_context(self, b, text_embeds, image_embeds):
        cfg = self.config
        if text_embeds.ndim != 3 or text_embeds.shape[0] != b or text_embeds.shape[2] != cfg.text_dim:
            raise _shape_error("text_embeds", text_embeds.shape, f"({b}, text_len, {cfg.text_dim})")
        if cfg.image_dim is None and image_embeds is not None:
            raise ValueError("image_embeds given but the model has no image cross-attention "
                             "(image_dim is None)")
        if cfg.image_dim is not None and (
                image_embeds is None or image_embeds.ndim != 3 or image_embeds.shape[0] != b
                or image_embeds.shape[2] != cfg.image_dim):
            got = None if image_embeds is None else image_embeds.shape
            raise ValueError(f"this I2V model needs image_embeds of shape ({b}, image_len, "
                             f"{cfg.image_dim}), got {got}")

    def _blocks(self, grid, layout: TokenLayout | None = None, cached: bool = False):
        """The block stack: nn.scan over layers (params stacked on a leading 'layers' axis).

        Per-layer outputs (the condition K/V when building a cache) are stacked on axis 1
        ([b, layers, ...]); a cache given to the stack is scanned over the same axis.
        """
        cfg = self.config
        block = WanBlock
        if cfg.remat != "none":
            block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
        stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=(nn.broadcast, 1) if cached else nn.broadcast, out_axes=1,
                        length=cfg.num_layers,
                        unroll=1 if cfg.scan_layers else cfg.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})
        return stack(cfg, grid, layout, name="blocks")


class PatchEmbed(nn.Module):
    """Linear map of flattened patches; kernel kept in Conv3d order [pt, ph, pw, c_in, dim]."""

    config: DiTConfig

    @nn.compact
    def __call__(self, tokens):
        cfg = self.config
        shape = (*cfg.patch_size, cfg.patch_in_channels, cfg.dim)
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.xavier_uniform(in_axis=(0, 1, 2, 3), out_axis=4),
            (None, None, None, "in", "embed")), shape, cfg.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                          (cfg.dim,), cfg.param_dtype)
        kernel = kernel.reshape(-1, cfg.dim).astype(cfg.dtype)  # [pt*ph*pw*c_in, dim]
        return tokens @ kernel + bias.astype(cfg.dtype)  # [b, L, dim]


class Head(nn.Module):
    """Output head: LayerNorm modulated by (table + timestep embedding), then a linear map."""

    config: DiTConfig

    @nn.compact
    def __call__(self, x, temb):
        cfg = self.config
        table = self.param("modulation", nn.with_logical_partitioning(
            nn.initializers.normal(cfg.dim ** -0.5), (None, "embed")), (2, cfg.dim),
            cfg.param_dtype)
        shift, scale = jnp.split(table.astype(jnp.float32)[None] + temb[:, None], 2, axis=1)
        x = modulate(x, shift, scale, cfg.eps, cfg.dtype)  # [b, L, dim]
        return dense(math.prod(cfg.patch_size) * cfg.out_channels, ("embed", None), "proj",
                     cfg.dtype, cfg.param_dtype)(x)  # [b, L, pt*ph*pw*c_out]


class ImageEmbedding(nn.Module):
    """CLIP tokens -> model width: LayerNorm, Linear, GELU (exact), Linear, LayerNorm."""

    config: DiTConfig

    @nn.compact
    def __call__(self, image_embeds):
        cfg = self.config
        h = AffineLayerNorm(1e-5, cfg.dtype, "in", name="norm_in")(image_embeds)  # [b, Li, 1280]
        h = MLP(cfg.image_dim, cfg.dim, "gelu", ("in", "mlp"), ("mlp", "embed"), cfg.dtype,
                cfg.param_dtype, name="mlp")(h)  # [b, Li, dim]
        return AffineLayerNorm(1e-5, cfg.dtype, name="norm_out")(h)
