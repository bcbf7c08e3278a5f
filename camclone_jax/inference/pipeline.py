"""CamClone inference: references + prompt -> video, as a library (the CLI: inference/cli.py).

    pipe = CamClonePipeline.from_checkpoint("ckpt/", vae="Wan2.1_VAE.pth",
                                            prompt_cache="cache/prompts")
    result = pipe.generate("cam.mp4", "a red car in the snow", image="first.png",
                           frames=81, height=480, width=832, seed=0)
    result.video                 # uint8 [81, 480, 832, 3]

Tasks, conditioned exactly as ``camclone_jax.train`` trains them, by the one conditioning
contract (``camclone_jax.tasks``; the public release's rules). I2V (an ``image``): the content
reference is all-zero latents. V2V (a ``content_ref`` video): its latents are the content
reference, and the first frame is the given ``image`` (the release's ``first_frame_path``) or
else the content video's frame 0 (``v2v_first_frame="none"``: no first frame, a zero
condition and a black frame's CLIP tokens). ``task="i2v"`` with a content video zeroes its
latent and keeps its first frame (the release's ``--cameraclone_type i2v``). The first frame
enters as follows:
  * I2V base (``cond_channels > 0``, e.g. Wan 2.1 I2V, the public checkpoint): the first-frame
    mask + latent channels (``first_frame_condition`` of the codec latents of [image, zeros...])
    and, when the model has image cross-attention (``image_dim``), CLIP image tokens, which need
    the CLIP weights (``clip=``).
  * T2V-style base (``cond_channels == 0``, e.g. the tiny demo models, which never see a first
    frame in training): frame replacement: the first latent frame of the sample is pinned to
    the image latent, noised to the current level, before every model call, and set to it
    exactly at the end (``sampler.Replacement``); in V2V only for an image given explicitly.

Codec: anything with ``encode(frames [b, F, H, W, 3] in [-1, 1]) -> latents [b, f, h, w, C]``,
``decode(latents) -> frames``, ``latent_channels``, ``temporal_factor``, ``spatial_factor``:
``VAECodec`` (Wan VAE, tiled) or the pixel codec of ``camclone_jax.data.codec``.

Checkpoint directory extras (optional; explicit arguments win for the codec):
  codec.json  {"kind": "vae", "path": "..."} (relative to the checkpoint) or {"kind": "pixel",
              ...} (``PixelCodec.to_dict()``; read by ``data.codec.codec_from_dict``).
  text.json   {"kind": "none", "text_len": 16}: the model was trained without text; it gets
              zero embeddings [text_len, text_dim] and no guidance (cfg 1).
Text otherwise comes from the JAX umT5 encoder (``t5=`` + ``tokenizer=``; loaded for the
prompts, then freed before the DiT goes to the device) or a prompt cache (``prompt_cache=``).

Memory: DiT weights in bfloat16 on accelerators (``dtype="auto"``); text and image encoders are
freed after encoding; the DiT goes to the device only after them; the VAE decodes in tiles;
``mesh`` shards the sampling (the CFG pair, batched, over ``data``; tokens over ``context``;
weights by the logical rules of ``camclone_jax.sharding``). ``SampleResult.peak_memory``
reports the device peak where the backend tracks it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from camclone_jax import sharding, tasks
from camclone_jax.convert.transformer import load_transformer
from camclone_jax.data import reference
from camclone_jax.data.transforms import to_float
from camclone_jax.diffusion import sampler
from camclone_jax.inference import denoise as denoise_lib
from camclone_jax.inference.options import (SampleOptions, SampleResult, encode_float,
                                            peak_memory, resolve_dtype, to_uint8)
from camclone_jax.inference.sources import (CachedText, ClipImages, NoText, TextSource,
                                            UMT5Text, VAECodec, load_codec)
from camclone_jax.models.config import DiTConfig
from camclone_jax.models.dit import sequence_lengths
from camclone_jax.models.params import logical_specs
from camclone_jax.utils import read_json

DEFAULT_CFG = 5.0
# in an export: {"loss_from_frame": n}; n >= 1 means frame 0 was never scored in training
OBJECTIVE_FILE = "objective.json"


class SamplingInterrupted(Exception):
    """Sampling stopped on request (``CamClonePipeline.stop`` set, e.g. by SIGINT/SIGTERM)."""


# ------------------------------------------------------------------------------- the pipeline
class CamClonePipeline:
    """A DiT with its codec, text source and (I2V bases) CLIP; ``generate`` makes videos."""

    def __init__(self, config: DiTConfig, params, codec, text: TextSource, *,
                 clip: ClipImages | None = None, mesh=None, dtype: str = "auto",
                 context_parallel: str | None = None, timestep_rounding: str | None = None,
                 pin_first_frame: bool = False):
        dtype = resolve_dtype(dtype)
        changes = dict(dtype=dtype, param_dtype=dtype, remat="none")
        if context_parallel is not None:  # "none", "ulysses" or "ring" (see DiTConfig)
            changes["context_parallel"] = context_parallel
        if timestep_rounding is not None:  # "bfloat16": the release's timestep cast
            changes["timestep_rounding"] = timestep_rounding
        self.config = config.replace(**changes)
        self.codec, self.text, self.clip, self.mesh = codec, text, clip, mesh
        # a model trained without loss on frame 0 (objective.loss_from_frame >= 1) is never
        # taught to draw it: latent frame 0 follows the given first frame, as in training
        self.pin_first_frame = pin_first_frame
        if codec.latent_channels != config.out_channels:
            raise ValueError(f"the codec makes {codec.latent_channels}-channel latents, the DiT "
                             f"predicts {config.out_channels}; wrong --vae for this checkpoint?")
        if config.cond_channels and config.cond_channels != 4 + codec.latent_channels:
            raise ValueError(f"the DiT has {config.cond_channels} first-frame channels; expected "
                             f"4 + {codec.latent_channels} (mask + latent)")
        np_dtype = jnp.dtype(dtype)
        self.stop = threading.Event()  # set it (e.g. from a signal handler) to stop sampling
        self.traces = 0  # how often this pipeline's sampling loop was traced (compiled)
        self._tick = None  # the running sample's per-step host function (see ``denoise``)
        self._host_params = jax.tree_util.tree_map(lambda p: np.asarray(p).astype(np_dtype), params)
        self._params = None  # placed on the device at the first sample, after the encoders ran

    # -------------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, checkpoint: str, *, vae: str | None = None, t5: str | None = None,
                        tokenizer: str | None = None, prompt_cache: str | None = None,
                        clip: str | None = None, dtype: str = "auto", mesh=None,
                        context_parallel: str | None = None,
                        timestep_rounding: str | None = None,
                        text_max_length: int = 512) -> "CamClonePipeline":
        """Loads what ``checkpoint`` needs (see the module docstring for the rules)."""
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        base = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
        extra = {name: read_json(os.path.join(base, f"{name}.json"))
                 for name in ("codec", "text", OBJECTIVE_FILE[:-len(".json")])
                 if os.path.isfile(os.path.join(base, f"{name}.json"))}
        config, params = load_transformer(checkpoint)
        if vae is not None:
            codec = VAECodec.load(vae)
        elif "codec" in extra:
            codec = load_codec(extra["codec"], base)
        else:
            raise ValueError(f"no codec for {checkpoint}: pass --vae PATH (Wan VAE weights) or "
                             "put a codec.json in the checkpoint directory")
        text_kind = extra.get("text", {}).get("kind")
        if text_kind == "none":
            if t5 or prompt_cache:
                raise ValueError(f"{checkpoint} was trained without text (text.json kind none); "
                                 "drop --t5/--prompt_cache")
            text = NoText(extra["text"].get("text_len", 1), config.text_dim)
        elif text_kind not in (None, "t5", "umt5"):
            raise ValueError(f"unknown text kind {text_kind!r} in {base}/text.json")
        elif t5 is not None or tokenizer is not None:
            if t5 is None or tokenizer is None:
                raise ValueError("the umT5 encoder needs both --t5 (weights) and --tokenizer")
            text = UMT5Text(t5, tokenizer, dtype=resolve_dtype(dtype), max_length=text_max_length)
        elif prompt_cache is not None:
            text = CachedText(prompt_cache)
        else:
            raise ValueError("no text conditioning: pass --t5 PATH --tokenizer PATH (JAX umT5) or "
                             "--prompt_cache DIR (python -m camclone_jax.encode_prompts)")
        if config.image_dim is not None and clip is None:
            raise ValueError(f"{checkpoint} is an I2V-base model with CLIP image cross-attention "
                             f"(image_dim={config.image_dim}): pass --clip PATH (Wan's CLIP "
                             "ViT-H/14 weights)")
        clip_enc = ClipImages(clip, resolve_dtype(dtype)) if config.image_dim is not None else None
        pin = extra.get("objective", {}).get("loss_from_frame", 0) >= 1
        return cls(config, params, codec, text, clip=clip_enc, mesh=mesh, dtype=dtype,
                   context_parallel=context_parallel, timestep_rounding=timestep_rounding,
                   pin_first_frame=pin)

    # ------------------------------------------------------------------------------- helpers
    def params(self):
        """DiT params on the device(s), placed on first use (sharded by the mesh if any)."""
        if self._params is None:
            if self.mesh is None:
                self._params = jax.device_put(self._host_params)
            else:
                self._params = jax.device_put(self._host_params, sharding.logical_sharding(
                    logical_specs(self.config), self.mesh))
        return self._params

    def guidance(self, opts: SampleOptions) -> float:
        """The CFG scale of a sample: opts.cfg, or the default; 1 means no guidance."""
        if opts.cfg is None:
            return DEFAULT_CFG if self.text.guidance else 1.0
        if opts.cfg != 1.0 and not self.text.guidance:
            raise ValueError(f"cfg={opts.cfg}: this model has no text conditioning, so there is "
                             "nothing to guide; use cfg 1 (the default for it)")
        return float(opts.cfg)

    def check_options(self, opts: SampleOptions):
        """Raises ValueError naming every option the model/codec cannot take."""
        c, (pt, ph, pw) = self.codec, self.config.patch_size
        tf, sf = c.temporal_factor, c.spatial_factor
        problems = opts.problems()
        if opts.frames >= 1 and ((opts.frames - 1) % tf or ((opts.frames - 1) // tf + 1) % pt):
            k = max(0, (opts.frames - 1) // tf)
            problems.append(f"frames={opts.frames} must be 1 + {tf}k (e.g. {1 + tf * k} or "
                            f"{1 + tf * (k + 1)})")
        for name, size, p in (("height", opts.height, ph), ("width", opts.width, pw)):
            if size >= 1 and size % (sf * p):
                problems.append(f"{name}={size} must be a positive multiple of {sf * p}")
        if problems:
            raise ValueError("invalid sample options: " + "; ".join(problems))

    @staticmethod
    def task_of(opts: SampleOptions, image, content_ref) -> str:
        """"i2v" or "v2v" for these inputs: ``opts.task``, else V2V when a content video is
        given. Raises ValueError for inputs the task cannot take."""
        task = opts.task or ("v2v" if content_ref is not None else "i2v")
        if task not in tasks.TASKS:
            raise ValueError(f"task must be i2v or v2v, got {task!r}")
        if image is None and content_ref is None:
            raise ValueError("give an image (I2V: --image) or a content video (V2V: "
                             "--content_ref; with --image too, it is V2V's first frame)")
        if task == "v2v" and content_ref is None:
            raise ValueError("task v2v needs a content video (--content_ref)")
        if task == "v2v" and image is not None and opts.v2v_first_frame == "none":
            raise ValueError("an image with a content video is V2V's first frame, but "
                             "v2v_first_frame='none' conditions V2V on no first frame; drop the "
                             "image or use v2v_first_frame='content'")
        return task

    def latent_shape(self, opts: SampleOptions) -> tuple[int, int, int, int, int]:
        c = self.codec
        return (1, 1 + (opts.frames - 1) // c.temporal_factor, opts.height // c.spatial_factor,
                opts.width // c.spatial_factor, c.latent_channels)

    def _check_mesh(self, batch: int, latent_shape):
        if self.mesh is None:
            return
        s = self.mesh.shape
        dp = s["data"] * s["fsdp"]
        if batch % dp:
            raise ValueError(f"mesh data*fsdp={dp} does not divide the batch of {batch} (2 with "
                             "guidance: the cond/uncond pair; 1 without); use context parallel")
        tokens = sum(sequence_lengths(self.config, latent_shape).values())
        if tokens % s["context"]:
            raise ValueError(f"mesh context={s['context']} does not divide the {tokens} tokens")

    def _put(self, tree):
        if self.mesh is None:
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    # ------------------------------------------------------------------------------ sampling
    def prepare_prompts(self, prompts: Sequence[str]):
        """Encodes prompts ahead of the samples (batch jobs: the text encoder loads once)."""
        self.text.embed(list(prompts))
        self.text.release()

    def generate(self, camera_ref, prompt: str = "", *, image=None, content_ref=None,
                 options: SampleOptions | None = None, progress: bool = True,
                 **overrides) -> SampleResult:
        """One video. camera_ref / content_ref: a video path or uint8 [n, H, W, 3]; image: an
        image path or uint8 [H, W, 3]; ``overrides``: SampleOptions fields."""
        opts = (options or SampleOptions()).replace(**overrides)
        self.check_options(opts)
        task = self.task_of(opts, image, content_ref)
        scale = self.guidance(opts)
        guided = scale != 1.0
        shape = self.latent_shape(opts)
        self._check_mesh(2 if guided and opts.cfg_batched else 1, shape)
        times, t0 = {}, time.perf_counter()
        load = dict(sampling=opts.sampling, fps=opts.fps, short=opts.short, fit=opts.fit,
                    max_crop=opts.max_crop)
        fhw = (opts.frames, opts.height, opts.width)
        cam = reference.load_reference_video(camera_ref, *fhw, what="camera reference", **load)
        content = None if content_ref is None else reference.load_reference_video(
            content_ref, *fhw, what="content reference", **load)
        given = None
        if image is not None:
            given = reference.load_image(image, opts.height, opts.width, fit=opts.fit,
                                         max_crop=opts.max_crop, what="first-frame image")
        # the release: V2V's first frame is the given image, else the content's frame 0
        first = given if given is not None or content is None else content[0]  # [H, W, 3]
        if not tasks.has_first_frame(tasks.TASKS[task], opts.v2v_first_frame):
            first = None
        image_in = tasks.conditioning_image(
            (first if first is not None else np.zeros(fhw[1:] + (3,), np.uint8))[None],
            task, opts.v2v_first_frame)  # [1, H, W, 3]: black when there is no first frame

        # Encoders first (freed after), then the DiT goes to the device.
        texts = self.text.embed([prompt] + ([opts.negative_prompt] if guided else []))  # [n, L, D]
        if texts.shape[-1] != self.config.text_dim:
            raise ValueError(f"text embeddings have width {texts.shape[-1]}, the DiT takes "
                             f"{self.config.text_dim}; wrong text encoder or prompt cache?")
        self.text.release()
        cond = {"text": texts[:1]}
        if guided:
            cond["neg_text"] = texts[1:2]
        refs = {"cam_latents": encode_float(self.codec, to_float(cam))}  # [1, f, h, w, C]
        if content is not None:
            refs["content_latents"] = encode_float(self.codec, to_float(content))
        for name, lat in refs.items():
            if tuple(lat.shape) != shape:
                raise ValueError(f"the codec encoded the {name.split('_')[0]} reference to "
                                 f"{lat.shape}, expected {shape}")
        image_latents = None
        if self.config.cond_channels:  # [image, zeros...], as Wan I2V encodes it
            image_latents = encode_float(self.codec, tasks.first_frame_video(
                to_float(image_in), opts.frames)[0])  # [1, f, h, w, C]
        inputs = tasks.dit_inputs(
            self.config, task=task, image_latents=image_latents,
            image_embeds=None if self.config.image_dim is None else self.clip.encode(image_in[0]),
            conditioning="no_camera" if opts.no_camera else "camclone",
            v2v_first_frame=opts.v2v_first_frame, **refs)
        cond.update(cam=inputs["cam_latents"], content=inputs["content_latents"])
        for key, name in (("first_frame", "first_frame"), ("image_embeds", "image")):
            if key in inputs:
                cond[name] = inputs[key]
        noise = jax.random.normal(jax.random.key(opts.seed), shape, jnp.float32)  # [1, f, h, w, C]
        replacement = None
        if first is not None and ((not self.config.cond_channels and (
                task == "i2v" or given is not None)) or (self.config.cond_channels
                                                          and self.pin_first_frame)):
            # T2V-style base: frame replacement pins latent frame 0 to the image (I2V, or a V2V
            # image given explicitly; such models never saw a first frame in training). A
            # first-frame-conditioned model trained without loss on frame 0 gets it too: in
            # training its noisy frame 0 was always the true one, never its own drawing.
            known = jnp.zeros(shape, jnp.float32).at[:, :1].set(
                encode_float(self.codec, to_float(first)[None]))  # [1, f, h, w, C]
            mask = jnp.zeros((1, shape[1], 1, 1, 1), jnp.float32).at[:, 0].set(1.0)
            replacement = sampler.Replacement(known, noise, mask)
        times["encode"] = time.perf_counter() - t0
        self.check_stop("after encoding the inputs")

        spacing = opts.schedule or sampler.default_spacing(opts.solver)
        tables = sampler.solver_tables(sampler.make_schedule(opts.steps, opts.shift, spacing),
                                       opts.solver, opts.order)
        t0 = time.perf_counter()
        latents = self.denoise(cond, noise, tables, scale, replacement, solver=opts.solver,
                               order=opts.order, guided=guided, batched=opts.cfg_batched,
                               progress=progress)
        times["denoise"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        video = to_uint8(self.codec.decode(latents)[0])  # [F, H, W, 3]
        times["decode"] = time.perf_counter() - t0
        if video.shape != (opts.frames, opts.height, opts.width, 3):
            raise ValueError(f"the codec decoded {video.shape}, expected "
                             f"{(opts.frames, opts.height, opts.width, 3)}")
        return SampleResult(video=video, camera_ref=cam, content_ref=content, first_frame=first,
                            latents=np.asarray(latents[0]), task=task, seconds=times,
                            peak_memory=peak_memory())

    def denoise(self, cond: dict, noise, tables: dict, scale: float, replacement=None, *,
                solver: str = "euler", order: int = 2, guided: bool = True,
                batched: bool = True, progress: bool = True):
        """Runs the jitted sampling loop -> latents [1, f, h, w, C] (float32)."""
        params = self.params()
        args = self._put((cond, noise, {k: jnp.asarray(v) for k, v in tables.items()},
                          jnp.float32(scale), replacement))
        total = len(tables["sigma"])
        bar = tqdm(total=total, desc="denoising", unit="step", disable=not progress, leave=False)
        done = {"steps": 0}

        def tick(steps):  # on the host after every step: progress, and the stop request
            done["steps"] = steps
            bar.update(max(0, steps - bar.n))  # idempotent
            if self.stop.is_set():
                raise SamplingInterrupted(f"stopped after denoising step {steps} of {total}")

        self._tick = tick
        quiet = logging.getLogger("jax._src.debugging")  # it logs the stop as a traceback
        was_disabled, quiet.disabled = quiet.disabled, True
        self.check_stop("before denoising")
        try:
            run = functools.partial(denoise_lib.denoise, params, *args, cfg=self.config,
                                    solver=solver, order=order, guided=guided, batched=batched,
                                    progress=self._on_step, on_trace=self._on_trace)
            try:
                if self.mesh is None:
                    out = run()
                else:
                    with _ambient(self.mesh):
                        out = run()
                out = jax.block_until_ready(out)
            except Exception as e:  # the stop raised inside the loop's host callback
                if self.stop.is_set():
                    raise SamplingInterrupted(f"stopped after denoising step {done['steps']} of "
                                              f"{total}") from None
                raise
            if self.mesh is not None:  # the codec's weights live on the default device
                out = jax.device_put(out, jax.devices()[0])
        finally:
            self._tick = None
            quiet.disabled = was_disabled
            bar.close()
        return out

    def _on_step(self, steps):
        """The loop's per-step host callback, forwarded to the running sample's ``tick``. A
        bound method is equal to itself on every access, so the jitted loop is traced once per
        shape, not once per sample."""
        if self._tick is not None:
            self._tick(int(steps))

    def _on_trace(self):
        self.traces += 1

    def check_stop(self, where: str):
        """Raises SamplingInterrupted when a stop was requested (``self.stop``)."""
        if self.stop.is_set():
            raise SamplingInterrupted(f"stopped {where}")


def _ambient(mesh):
    """Makes ``mesh`` the ambient mesh of the sampling call (sharding constraints, context
    parallel attention): ``jax.set_mesh`` where it exists, else ``with mesh``."""
    return jax.set_mesh(mesh) if hasattr(jax, "set_mesh") else mesh
