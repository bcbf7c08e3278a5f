"""Our conditioning, DiT and sampler against the public CamCloneMaster release's own code.

The golden files come from ``benchmarks/release_golden.py``, which runs the release's
``model_fn_wan_video`` and ``WanVideoI2VPipeline`` (a checkout of its repository, outside the
project) on tiny random weights; see that script for what each file holds. Here only numpy
and our JAX code run (no torch, no release code), in float32 at atol 1e-4:

  * the DiT forward on the release's I2V and V2V inputs (first-frame condition, camera and
    content references zero-padded to 36 channels and frame-concatenated, image tokens);
  * the conditioning: our VAE + ``tasks`` give the release's ``encode_image`` mask and ``y``,
    its reference latents, its I2V content zeroing and the image its CLIP sees (V2V: the content
    video's frame 0);
  * three Euler steps with CFG 5 end to end: our sampler on the release's inputs, and
    ``CamClonePipeline.generate`` from the uint8 videos, with the same fixed text and image
    encoders standing in for umT5 and CLIP on both sides.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import tasks
from camclone_jax.convert.transformer import load_transformer
from camclone_jax.convert.vae import load_vae
from camclone_jax.data.transforms import to_float
from camclone_jax.diffusion import sampler
from camclone_jax.inference import CamClonePipeline
from camclone_jax.inference import denoise as denoise_lib
from camclone_jax.inference.sources import TextSource, VAECodec
from camclone_jax.models.dit import DiT
from camclone_jax.models.vae import WanVAEConfig

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")
ATOL = 1e-4
TASK_IDS = {"i2v": tasks.I2V, "v2v": tasks.V2V}


# ------------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def golden(name: str) -> dict:
    with np.load(os.path.join(GOLDEN, f"release_{name}.npz")) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    if "prompts" in out:
        out["table"] = dict(zip([str(p) for p in out["prompts"]], out["prompt_embeds"]))
    return out


@functools.lru_cache(maxsize=None)
def dit():
    meta = golden("dit")["meta"]
    cfg, params = load_transformer(os.path.join(GOLDEN, "release_dit.safetensors"),
                                   **meta["our_dit"])
    return cfg, params


@functools.lru_cache(maxsize=None)
def codec() -> VAECodec:
    meta = golden("dit")["meta"]
    cfg, params = load_vae(os.path.join(GOLDEN, "release_vae.safetensors"),
                           config=WanVAEConfig(**meta["our_vae"]))
    return VAECodec(cfg, params, tiled=True)


def ours(x: np.ndarray) -> np.ndarray:
    """The release's channels-first [b, C, f, h, w] -> our channels-last [b, f, h, w, C]."""
    return np.moveaxis(np.asarray(x), 1, -1)


def image_tokens(image_u8: np.ndarray, g: dict) -> np.ndarray:
    """The fixed stand-in for CLIP (as in benchmarks/release_golden.py): image uint8 [H, W, 3]
    -> base + channel_means(x * 2/255 - 1) @ proj, [1, 257, d]."""
    x = image_u8.astype(np.float32) * (2 / 255) - 1
    return (g["clip_base"] + x.reshape(-1, 3).mean(0) @ g["clip_proj"])[None].astype(np.float32)


def split_ref(padded: np.ndarray) -> np.ndarray:
    """The release's 36-channel reference latent -> ours (16 channels); its padding is zero."""
    lat = ours(padded)
    assert lat.shape[-1] == 36 and not np.any(lat[..., 16:]), "release pads with 20 zero channels"
    return lat[..., :16]


@functools.lru_cache(maxsize=None)
def _apply(rounding: str = "none"):
    cfg = dit()[0].replace(timestep_rounding=rounding)
    return jax.jit(lambda params, x, t, text, kw: DiT(cfg).apply({"params": params}, x, t, text, **kw))


def run_dit(x, t, text, kwargs, rounding: str = "none"):
    _, params = dit()
    return np.asarray(_apply(rounding)(params, jnp.asarray(x),
                                       jnp.full((x.shape[0],), t, jnp.float32),
                                       jnp.asarray(text), kwargs))


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ------------------------------------------------------------------------------- (a) the DiT
@pytest.mark.parametrize("task", ["i2v", "v2v"])
def test_dit_forward_equals_release(task):
    """model_fn_wan_video on the release's I2V / V2V inputs, through tasks.dit_inputs."""
    g = golden("dit")
    cfg, _ = dit()
    kwargs = tasks.dit_inputs(
        cfg, task=np.array([TASK_IDS[task]]), cam_latents=split_ref(g["ref_latents"]),
        content_latents=split_ref(g["content_latents"]),  # I2V: zeroed by the contract
        image_latents=ours(g["y"])[..., 4:], image_embeds=image_tokens(g["image"], g),
        conditioning="camclone", v2v_first_frame="content")
    np.testing.assert_array_equal(np.asarray(kwargs["first_frame"]), ours(g["y"]))
    x = ours(g["x"])
    f = x.shape[1]
    for suffix, rounding in (("", "none"), ("_bf16", "bfloat16")):  # the release's bf16 cast
        expected = ours(g[f"{task}/out{suffix}"])[:, :f]  # the head's target frames
        got = run_dit(x, float(g["timestep"]), g["context"], kwargs, rounding)
        d = maxdiff(got, expected)
        print(f"release DiT {task}{suffix}: max abs diff {d:.2e}")
        assert d < ATOL, (task, suffix, d)


def test_bf16_timestep_changes_the_release_dit_output():
    """The rounding the release's bf16 pipeline applies to timesteps is visible (measured)."""
    g = golden("dit")
    assert float(g["timestep_bf16"]) == 988.0 and float(g["timestep"]) != 988.0
    assert maxdiff(g["i2v/out"], g["i2v/out_bf16"]) > 1e-3


# ------------------------------------------------------------------------------ (b) conditioning
@functools.lru_cache(maxsize=None)
def _encode(name: str, key: str) -> np.ndarray:
    return np.asarray(codec().encode(jnp.asarray(to_float(golden(name)[key]))[None]))


@functools.lru_cache(maxsize=None)
def _encode_first_frame(name: str, image_key: str, frames: int) -> np.ndarray:
    image = to_float(golden(name)[image_key])[None]  # [1, H, W, 3]
    return np.asarray(codec().encode(tasks.first_frame_video(image, frames)))


def test_first_frame_condition_equals_release_encode_image():
    """Our VAE on [image, zeros...] + first_frame_condition == the release's mask and y."""
    g = golden("dit")
    latents = _encode_first_frame("dit", "image", int(g["frames"]))  # [1, f, h, w, 16]
    cfg, _ = dit()
    cond = tasks.dit_inputs(cfg, task="i2v", cam_latents=np.zeros_like(latents),
                            image_latents=latents, image_embeds=image_tokens(g["image"], g))
    y = ours(g["y"])
    np.testing.assert_array_equal(np.asarray(cond["first_frame"])[..., :4], y[..., :4])  # mask
    d = maxdiff(cond["first_frame"], y)
    print(f"release encode_image y (9 frames 32x48): max abs diff {d:.2e}")
    assert d < ATOL


@pytest.mark.parametrize("key", ["ref", "content"])
def test_reference_latents_equal_release_encode_video(key):
    """Our VAE (tiled codec) == the release's encode_video of the references (before padding)."""
    g = golden("dit")
    d = maxdiff(_encode("dit", f"{key}_video"), split_ref(g[f"{key}_latents"]))
    print(f"release encode_video {key}: max abs diff {d:.2e}")
    assert d < ATOL


@pytest.mark.parametrize("task", ["i2v", "v2v"])
def test_pipeline_conditioning_equals_release(task):
    """What the release pipeline hands its DiT (81 frames): the CLIP image (V2V: the content
    video's frame 0), mask + y, the references (I2V: content zeroed, content video given)."""
    g = golden("pipeline")
    first = g["image"] if task == "i2v" else g["content_video"][0]  # our pipeline's rule
    np.testing.assert_array_equal(first, g[f"{task}/input_image"])
    image = tasks.conditioning_image(first[None], task, "content")  # [1, H, W, 3]
    assert maxdiff(to_float(image), g[f"{task}/clip_image"]) < 1e-6  # what the release's CLIP saw
    name = "image" if task == "i2v" else "content_video"
    latents = (_encode_first_frame("pipeline", "image", int(g["frames"])) if task == "i2v" else
               np.asarray(codec().encode(tasks.first_frame_video(to_float(image), int(g["frames"])))))
    cfg, _ = dit()
    kw = tasks.dit_inputs(cfg, task=task, cam_latents=_encode("pipeline", "ref_video"),
                          content_latents=_encode("pipeline", "content_video"),
                          image_latents=latents, image_embeds=image_tokens(image[0], g))
    diffs = {
        "y": maxdiff(kw["first_frame"], ours(g[f"{task}/y"])),
        "ref": maxdiff(kw["cam_latents"], split_ref(g[f"{task}/ref_latents"])),
        "content": maxdiff(kw["content_latents"], split_ref(g[f"{task}/content_latents"])),
    }
    print(f"release pipeline conditioning {task} ({name}): {diffs}")
    if task == "i2v":
        assert not np.any(g["i2v/content_latents"]) and not np.any(kw["content_latents"])
    assert max(diffs.values()) < ATOL, diffs


# ------------------------------------------------------------------------------ (c) end to end
def _cond(task: str) -> dict:
    """The release's own DiT inputs, in denoise's cond layout, built by tasks.dit_inputs."""
    g = golden("pipeline")
    cfg, _ = dit()
    kw = tasks.dit_inputs(cfg, task=task, cam_latents=split_ref(g[f"{task}/ref_latents"]),
                          content_latents=split_ref(g[f"{task}/content_latents"]),
                          image_latents=ours(g[f"{task}/y"])[..., 4:],
                          image_embeds=image_tokens(g[f"{task}/input_image"], g))
    ctx = g[f"{task}/contexts"]  # [2, 1, L, D]: the prompt's, the negative prompt's
    return {"text": jnp.asarray(ctx[0]), "neg_text": jnp.asarray(ctx[1]),
            "cam": kw["cam_latents"], "content": kw["content_latents"],
            "first_frame": kw["first_frame"], "image": kw["image_embeds"]}


@pytest.mark.parametrize("task", ["i2v", "v2v"])
def test_every_dit_call_of_the_release_pipeline(task):
    """Each of the pipeline's 2 x steps DiT calls (prompt, negative prompt) on its own latents."""
    g = golden("pipeline")
    cond = _cond(task)
    outs, xs, ts = g[f"{task}/outs"], g[f"{task}/x"], g[f"{task}/timesteps"]
    worst = 0.0
    for i in range(len(xs)):
        for j, text in enumerate((cond["text"], cond["neg_text"])):
            kw = {"cam_latents": cond["cam"], "content_latents": cond["content"],
                  "first_frame": cond["first_frame"], "image_embeds": cond["image"]}
            got = run_dit(ours(xs[i]), float(ts[i][0]), text, kw)
            worst = max(worst, maxdiff(got, ours(outs[2 * i + j])))
    print(f"release pipeline DiT calls {task}: max abs diff {worst:.2e}")
    assert worst < ATOL


@pytest.mark.parametrize("task", ["i2v", "v2v"])
def test_sampler_equals_release_pipeline(task):
    """Our schedule, Euler steps and CFG from the release's noise and inputs == its latents;
    with timestep_rounding="bfloat16" == its latents with the timesteps cast to bf16."""
    g = golden("pipeline")
    cfg, params = dit()
    schedule = sampler.make_schedule(int(g["steps"]), float(g["shift"]), "release")
    tables = sampler.solver_tables(schedule, "euler")
    assert maxdiff(schedule.timesteps, g[f"{task}/timesteps"][:, 0]) < 1e-3
    rounded = np.asarray(jnp.asarray(schedule.timesteps).astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(rounded, g[f"{task}/timesteps_bf16"][:, 0])
    noise = jnp.asarray(ours(g[f"{task}/noise"]))
    for rounding, key in (("none", "latents"), ("bfloat16", "latents_bf16_timestep")):
        out = denoise_lib.denoise(params, _cond(task), noise, tables, jnp.float32(g["cfg"]), None,
                                  cfg=cfg.replace(timestep_rounding=rounding), solver="euler",
                                  order=2, guided=True, batched=True)
        d = maxdiff(out, ours(g[f"{task}/{key}"]))
        print(f"release pipeline {task} {key}: max abs diff {d:.2e}")
        assert d < ATOL, (key, d)


class FixedText(TextSource):
    """The golden prompt table (the stand-in for umT5 on both sides)."""

    def __init__(self, table):
        self.table = table

    def embed(self, prompts):
        return np.stack([self.table[p] for p in prompts])  # [n, L, D]


class FixedClip:
    """The stand-in for CLIP on both sides; remembers the images it was given."""

    def __init__(self, g):
        self.g, self.seen = g, []

    def encode(self, image):
        self.seen.append(np.asarray(image))
        return image_tokens(np.asarray(image), self.g)


def _release_uint8(frames) -> np.ndarray:
    """The release's tensor2video: ((x + 1) * 127.5).clip(0, 255).astype(uint8), truncating."""
    return np.clip((np.asarray(frames, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("task,rounding", [("i2v", "none"), ("v2v", "none"), ("i2v", "bfloat16")])
def test_pipeline_generate_equals_release_pipeline(task, rounding, monkeypatch):
    """CamClonePipeline.generate from the uint8 videos (the release's noise injected) == the
    release pipeline's final latents and decoded video. I2V is the release's
    ``--cameraclone_type i2v`` with a content video (zeroed); V2V takes no image (the content
    video's frame 0 is its first frame). ``timestep_rounding="bfloat16"``: the release's
    timestep cast."""
    g = golden("pipeline")
    meta = g["meta"]
    cfg, params = dit()
    clip = FixedClip(g)
    pipe = CamClonePipeline(cfg, params, codec(), FixedText(g["table"]), clip=clip,
                            dtype="float32", timestep_rounding=rounding)
    noise = jnp.asarray(ours(g[f"{task}/noise"]))
    normal = jax.random.normal

    def release_noise(key, shape=(), dtype=jnp.float32):
        return noise if tuple(shape) == noise.shape else normal(key, shape, dtype)

    monkeypatch.setattr(jax.random, "normal", release_noise)
    kwargs = dict(image=g["image"], task="i2v") if task == "i2v" else {}
    result = pipe.generate(g["ref_video"], meta["prompts"][task], content_ref=g["content_video"],
                           frames=int(g["frames"]), height=int(g["height"]),
                           width=int(g["width"]), steps=int(g["steps"]), shift=float(g["shift"]),
                           cfg=float(g["cfg"]), negative_prompt=meta["negative"], solver="euler",
                           schedule="release", progress=False, **kwargs)
    np.testing.assert_array_equal(clip.seen[-1], g[f"{task}/input_image"])
    key = "latents" if rounding == "none" else "latents_bf16_timestep"
    d_lat = maxdiff(result.latents[None], ours(g[f"{task}/{key}"]))
    print(f"release pipeline generate {task} ({rounding} timesteps): latents {d_lat:.2e}")
    assert d_lat < ATOL, d_lat
    if rounding != "none":
        return
    keep = g["decoded_frames"]
    decoded = np.asarray(codec().decode(jnp.asarray(result.latents[None])))[:, keep]
    d_dec = maxdiff(decoded, ours(g[f"{task}/decoded"]))
    # uint8: the release truncates (tensor2video), we round (inference.options.to_uint8): equal by the
    # release's rule wherever a value is not within float noise of an integer step
    release_rule = _release_uint8(decoded[0])
    near_step = np.abs(((decoded[0] + 1) * 127.5) % 1.0 - 0.5) > 0.5 - 1e-3
    mismatch = (release_rule != g[f"{task}/video"]) & ~near_step
    rounded = np.mean(result.video[keep] != g[f"{task}/video"])
    print(f"release pipeline generate {task}: decoded {d_dec:.2e}; our uint8 frames differ by "
          f"<= {maxdiff(result.video[keep], g[f'{task}/video']):.0f} in {rounded:.0%} of values "
          "(we round, the release truncates)")
    assert d_dec < ATOL and not mismatch.any(), (d_dec, mismatch.sum())
    assert maxdiff(result.video[keep], g[f"{task}/video"]) <= 1


def test_v2v_without_first_frame_is_not_the_release():
    """The earlier convention (v2v_first_frame="none": zero first-frame condition, a black
    frame's CLIP tokens) is far from the release's V2V output: the goldens see the difference."""
    g = golden("dit")
    cfg, _ = dit()
    black = tasks.conditioning_image(g["image"][None], "v2v", "none")[0]
    kwargs = tasks.dit_inputs(
        cfg, task="v2v", cam_latents=split_ref(g["ref_latents"]),
        content_latents=split_ref(g["content_latents"]), image_latents=ours(g["y"])[..., 4:],
        image_embeds=image_tokens(black, g), v2v_first_frame="none")
    assert not np.any(kwargs["first_frame"])
    x = ours(g["x"])
    got = run_dit(x, float(g["timestep"]), g["context"], kwargs)
    assert maxdiff(got, ours(g["v2v/out"])[:, :x.shape[1]]) > 1e-2


# ------------------------------------------------------------------ (d) reading videos, images
def _loader_file(name: str) -> str:
    return os.path.join(GOLDEN, f"release_loader_{name}")


def test_release_reads_the_first_frames_in_a_row():
    """The release's CamCloneDataset takes the first 81 frames, the last repeated when short
    (a 77-frame camera reference), and V2V's default first frame is the content's frame 0;
    our sampling="first" (short "auto": pad) picks the same frames."""
    g = golden("loader")
    n = int(g["frames"])
    np.testing.assert_array_equal(g["first_frame_default"], g["content_frames"][0])
    assert list(g["keep"][-3:]) == [76, 77, 80]  # 76: the camera reference's last frame
    np.testing.assert_array_equal(g["camera_frames"][-2:], np.repeat(g["camera_frames"][-3:-2], 2, 0))
    assert np.any(g["camera_frames"][-4] != g["camera_frames"][-3])
    from camclone_jax.data import reference

    np.testing.assert_array_equal(
        reference.frame_indices(77, n, sampling="first", short="auto"), np.minimum(np.arange(n), 76))
    np.testing.assert_array_equal(reference.frame_indices(120, n, sampling="first"), np.arange(n))


def test_reference_pixels_equal_the_release_loader():
    """Our reading of the same mp4 / png files == the release's loader (uint8, exactly)."""
    from camclone_jax.data import reference

    g = golden("loader")
    n, h, w, keep = int(g["frames"]), int(g["height"]), int(g["width"]), g["keep"]
    diffs = {}
    for name in ("camera", "content"):
        frames = reference.load_reference_video(_loader_file(f"{name}.mp4"), n, h, w,
                                                sampling="first", short="auto")[keep]
        diffs[name] = maxdiff(frames, g[f"{name}_frames"])
    diffs["image"] = maxdiff(reference.load_image(_loader_file("first.png"), h, w),
                             g["first_frame"])
    print(f"release loader: max abs uint8 diff {diffs}")
    assert max(diffs.values()) == 0, diffs
