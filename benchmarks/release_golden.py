"""Golden files from the public CamCloneMaster release's own code (tests/inference/test_release_golden.py).

    git clone https://github.com/KwaiVGI/CamCloneMaster /tmp/release     # outside the project
    python benchmarks/release_golden.py --release /tmp/release          # writes tests/golden/release_*

The loader golden (release_loader*) also needs pandas and torchvision, which is not installable
beside our CPU torch: as for benchmarks/raft_golden.py, use a venv that sees the system packages

    python -m venv --system-site-packages /tmp/relenv
    /tmp/relenv/bin/pip install --no-deps torchvision==0.28.0 && /tmp/relenv/bin/pip install pandas
    /tmp/relenv/bin/python benchmarks/release_golden.py --release /tmp/release

(without them the other files are written and the loader golden is skipped). The output is
deterministic: a rerun rewrites the same arrays.

The release's code is imported from that checkout and run; none of it is copied here. Only
the modules the I2V pipeline runs are loaded (``diffsynth/pipelines/wan_video_i2v.py`` with
``base.py``, ``models/wan_video_dit.py``, ``models/wan_video_vae.py``,
``schedulers/flow_match.py``, ``vram_management``), under stand-in package modules, so the
release's ``diffsynth/__init__.py`` (which imports every pipeline and needs modelscope,
torchvision, cupy...) never runs. Names those files import but these runs never call
(``ModelManager``, ``WanPrompter``, torchvision's ``GaussianBlur``, ``T.Compose`` ...) are
stand-ins when the real package is missing. ``Tensor.cuda`` is the identity (the pipeline's
denoising loop calls ``.cuda()`` after every step; everything here runs on the CPU).

Tiny random models, fixed seeds, float32 (weights rounded to float16 values and stored as
float16, so both sides hold exactly the same numbers):
  * a Wan DiT in the release's I2V form (36 input channels, image cross-attention; dim 24,
    2 heads of 12, 2 layers, text_dim 24; ``img_emb`` an ``MLP(64, dim)`` as
    inference_camclone.py builds it, with 64-wide image tokens instead of CLIP's 1280),
    saved as ``dit.state_dict()`` (the release checkpoint's DiffSynth key layout);
  * a Wan 2.1 VAE (``VideoVAE_`` with dim 4, dim_mult (1, 1, 2, 2), one residual block per
    level), saved as
    ``vae.model.state_dict()`` (the key layout of ``Wan2.1_VAE.pth``).
The text and image encoders are replaced in the release pipeline by fixed functions (the
tests use the same): text = a stored table of embeddings per prompt (a seeded RNG of the
prompt length, zero rows past it, as umT5's padding), image = ``base + channel_means(image)
@ proj`` with stored ``base`` [257, 64] and ``proj`` [3, 64] on the image the pipeline passes
to its CLIP (preprocess_image: x * 2/255 - 1).

Files:
  release_dit.safetensors, release_vae.safetensors   the tiny weights (float16 values)
  release_dit.npz       model_fn_wan_video for I2V and V2V: 9 frames 32x48 (latents 3x4x6);
                        the inputs (x, timestep, context, the image, y from the pipeline's
                        encode_image of an image, ref / content latents from its encode_video
                        padded to 36 channels; I2V content zeroed) and the output, once with the
                        float32 timestep and once with the timestep rounded to bfloat16 (as the
                        release's bf16 pipeline and training cast it)
  release_pipeline.npz  WanVideoI2VPipeline.__call__ end to end, 3 Euler steps, CFG 5, 81
                        frames at 16x32 (the pipeline hard-codes 21 latent frames), for
                        cameraclone_type "i2v" (an image + a content video, which it zeroes) and
                        "v2v" (the image is the content video's frame 0, as
                        inference_camclone.py's loader gives it): the uint8 inputs, the noise,
                        every DiT call's inputs (first call) and outputs (target frames), the
                        final latents, decoded frames and uint8 video (a few frames); plus the
                        final latents of the same runs with bf16-rounded timesteps and of a
                        whole-bf16 run.
  release_loader.npz    inference_camclone.py's CamCloneDataset (infer=True) at 81 frames 32x48
  + release_loader_camera.mp4 (77 frames 112x64), _content.mp4 (120 frames 128x80),
    _first.png (120x72): its frames (a few, uint8), frame count, first frame (the CSV's
    first_frame_path, and without that column: the content's frame 0), imageio's full-size
    decode of frame 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch

from release_stand_ins import (FixedImageEncoder, FixedPrompter, image_tokens,
                               prompt_embedding, smooth_video, video_tensor)

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden")

DIT = dict(dim=24, in_dim=36, ffn_dim=40, out_dim=16, text_dim=24, freq_dim=32, eps=1e-6,
           patch_size=(1, 2, 2), num_heads=2, num_layers=2, has_image_input=True)
IMAGE_DIM = 64  # width of the stand-in CLIP tokens (img_emb = MLP(IMAGE_DIM, dim))
IMAGE_TOKENS = 257  # the release's CrossAttention splits the context at 257 image tokens
VAE = dict(dim=4, z_dim=16, dim_mult=[1, 1, 2, 2], num_res_blocks=1, attn_scales=[],
           temperal_downsample=[False, True, True])
# our loaders' settings for these files (the head count is not in the shapes)
OUR_DIT = {"num_heads": DIT["num_heads"]}
OUR_VAE = {"base_dim": VAE["dim"], "dim_mult": VAE["dim_mult"],
           "num_res_blocks": VAE["num_res_blocks"]}
PROMPTS = {"i2v": "a red car drives through the snow", "v2v": "a man walks in a hall"}
NEGATIVE = "static, blurred"
DIT_TIMESTEP = 987.654  # bf16 rounds it to 988
TILER = dict(tiled=True, tile_size=(30, 52), tile_stride=(15, 26))  # the pipeline's defaults


# ---------------------------------------------------------------------------- the release
def import_release(root: str):
    """Imports the release's I2V pipeline modules from ``root`` without its package inits."""
    root = os.path.abspath(root)
    pkg = os.path.join(root, "diffsynth")
    if not os.path.isfile(os.path.join(pkg, "pipelines", "wan_video_i2v.py")):
        raise SystemExit(f"{root} is not a CamCloneMaster checkout (no diffsynth/pipelines/"
                         "wan_video_i2v.py)")
    for name in ("diffsynth", "diffsynth.models", "diffsynth.pipelines", "diffsynth.schedulers"):
        mod = types.ModuleType(name)
        mod.__path__ = [os.path.join(root, *name.split("."))]
        sys.modules[name] = mod
    sys.modules["diffsynth.models"].ModelManager = None  # imported for a type hint only
    prompters = types.ModuleType("diffsynth.prompters")
    prompters.WanPrompter = FixedPrompter  # replaced per run (FixedPrompter.table)
    sys.modules["diffsynth.prompters"] = prompters
    try:
        if "torchvision" not in sys.modules:  # a CPU torch with the CUDA torchvision wheel
            lib = torch.library.Library("torchvision", "DEF")  # (see raft_golden.py): declare
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # its
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # ops
            import_release.torchvision_lib = lib
        import torchvision.transforms  # noqa: F401
    except Exception:  # only GaussianBlur (merge_latents) and the CLIP transforms: never run
        tv = types.ModuleType("torchvision")
        tvt = types.ModuleType("torchvision.transforms")
        tvt.GaussianBlur = None
        tv.transforms = tvt
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tvt
    torch.Tensor.cuda = lambda self, *a, **k: self  # the denoising loop's .cuda(): CPU here
    from diffsynth.models import wan_video_dit, wan_video_vae
    from diffsynth.pipelines import wan_video_i2v
    return types.SimpleNamespace(dit=wan_video_dit, vae=wan_video_vae, pipe=wan_video_i2v)


def release_commit(root: str) -> str:
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"


# ---------------------------------------------------------------------------- tiny models
def _round16(module: torch.nn.Module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


def tiny_dit(rel):
    """The release's WanModel in its I2V form, random (seed 0), float16-rounded weights."""
    torch.manual_seed(0)
    dit = rel.dit.WanModel(**DIT)
    dit.img_emb = rel.dit.MLP(IMAGE_DIM, DIT["dim"])  # as inference_camclone.py does (1280 there)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if name.endswith("bias") or "norm" in name or "img_emb.proj.0" in name or \
                    "img_emb.proj.4" in name:
                p.add_(0.2 * torch.randn_like(p))  # norms and biases off their 1 / 0 init
            if name.startswith("head.head"):
                p.mul_(4.0)  # outputs of order 1
    _round16(dit)
    return dit.eval()


def tiny_vae(rel):
    """WanVideoVAE with a tiny VideoVAE_ (seed 1), float16-rounded weights."""
    torch.manual_seed(1)
    vae = rel.vae.WanVideoVAE(z_dim=16)
    vae.model = rel.vae.VideoVAE_(**VAE).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in vae.model.named_parameters():
            if name.endswith("gamma") or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    _round16(vae.model)
    return vae.eval()


def save_weights(path: str, state: dict):
    from safetensors.torch import save_file

    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, path,
              metadata={"format": "pt"})


# ---------------------------------------------------------------------------- test inputs
def fixed_encoders(text_dim: int):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((IMAGE_TOKENS, IMAGE_DIM)).astype(np.float32)
    proj = rng.standard_normal((3, IMAGE_DIM)).astype(np.float32)
    table = {p: prompt_embedding(p, text_dim) for p in list(PROMPTS.values()) + [NEGATIVE]}
    return base, proj, table


def make_pipe(rel, dit, vae, base, proj, dtype=torch.float32):
    pipe = rel.pipe.WanVideoI2VPipeline(device="cpu", torch_dtype=dtype)
    pipe.dit, pipe.vae = dit, vae
    pipe.image_encoder = FixedImageEncoder(base, proj)
    return pipe


# ---------------------------------------------------------------------------- (a) the DiT
def dit_golden(rel, dit, vae, base, proj, table) -> dict:
    """model_fn_wan_video on conditioning made by the pipeline's own encode_image / encode_video."""
    from PIL import Image
    import torch.nn.functional as F

    frames, height, width = 9, 32, 48
    pipe = make_pipe(rel, dit, vae, base, proj)
    image = smooth_video(10, 1, height, width)[0]
    ref = smooth_video(11, frames, height, width)
    content = smooth_video(12, frames, height, width)
    out = {"image": image, "ref_video": ref, "content_video": content,
           "frames": np.int64(frames)}
    with torch.no_grad():
        emb = pipe.encode_image([Image.fromarray(image)], frames, height, width)
        ref_lat = F.pad(pipe.encode_video(video_tensor(ref), **TILER), (0, 0, 0, 0, 0, 0, 0, 20))
        cont_lat = F.pad(pipe.encode_video(video_tensor(content), **TILER), (0, 0, 0, 0, 0, 0, 0, 20))
        g = torch.Generator().manual_seed(3)
        x = torch.randn((1, 16) + tuple(ref_lat.shape[2:]), generator=g)
        context = torch.from_numpy(table[PROMPTS["i2v"]])[None]
        clip_check = image_tokens(image.astype(np.float32) * (2 / 255) - 1, base, proj)
        assert np.abs(emb["clip_feature"].numpy() - clip_check).max() < 1e-5
        out.update(x=x.numpy(), context=context.numpy(), y=emb["y"].numpy(), ref_latents=ref_lat.numpy(), content_latents=cont_lat.numpy(),
                   timestep=np.float32(DIT_TIMESTEP),
                   timestep_bf16=np.float32(torch.tensor(DIT_TIMESTEP).bfloat16().float()))
        for task in ("i2v", "v2v"):
            content_in = torch.zeros_like(ref_lat) if task == "i2v" else cont_lat  # __call__'s rule
            for suffix, t in (("", DIT_TIMESTEP), ("_bf16", float(out["timestep_bf16"]))):
                v = rel.pipe.model_fn_wan_video(
                    dit, x, timestep=torch.tensor([t], dtype=torch.float32), cam_emb=None,
                    context=context, clip_feature=emb["clip_feature"], y=emb["y"],
                    ref_latents=ref_lat, content_latents=content_in)
                out[f"{task}/out{suffix}"] = v.numpy()  # [1, 16, 3f, h, w]: all segments
    return out


# ---------------------------------------------------------------------------- (b, c) pipeline
def pipeline_run(rel, dit, vae, base, proj, task: str, inputs: dict, *, steps: int,
                 round_timestep: bool = False, dtype=torch.float32) -> dict:
    """One WanVideoI2VPipeline.__call__, recording what its DiT calls see and return."""
    calls = []
    original = rel.pipe.model_fn_wan_video

    def recorded(dit_, x, timestep, **kw):
        if round_timestep:  # the bf16 cast of a bf16 pipeline, alone
            timestep = timestep.to(torch.bfloat16).to(timestep.dtype)
        v = original(dit_, x, timestep=timestep, **kw)
        calls.append({"x": x.float().numpy(), "timestep": timestep.float().numpy(),
                      "context": kw["context"].float().numpy(),
                      "clip_feature": kw["clip_feature"].float().numpy(),
                      "y": kw["y"].float().numpy(), "ref_latents": kw["ref_latents"].float().numpy(),
                      "content_latents": kw["content_latents"].float().numpy(),
                      "out": v[:, :, :x.shape[2]].float().numpy()})
        return v

    decoded = {}
    pipe = make_pipe(rel, dit, vae, base, proj, dtype)
    decode = pipe.decode_video

    def recorded_decode(latents, **kw):
        decoded["latents"] = latents.float().numpy()
        decoded["video"] = decode(latents, **kw)
        return decoded["video"]

    pipe.decode_video = recorded_decode
    captured_noise = {}
    generate = pipe.generate_noise

    def recorded_noise(*a, **kw):
        captured_noise["noise"] = generate(*a, **kw)
        return captured_noise["noise"]

    pipe.generate_noise = recorded_noise
    FixedPrompter.table, FixedPrompter.dtype = inputs["table"], dtype
    rel.pipe.model_fn_wan_video = recorded
    try:
        image = inputs["image"] if task == "i2v" else inputs["content_video"][0]
        frames = pipe(prompt=[PROMPTS[task]], negative_prompt=NEGATIVE,
                      input_image=torch.from_numpy(image)[None],
                      ref_video=video_tensor(inputs["ref_video"]).to(dtype),
                      content_video=video_tensor(inputs["content_video"]).to(dtype),
                      height=inputs["height"], width=inputs["width"], num_frames=inputs["frames"],
                      cfg_scale=5.0, num_inference_steps=steps, sigma_shift=5.0, seed=0,
                      progress_bar_cmd=lambda x: x, cameraclone_type=task, **TILER)
    finally:
        rel.pipe.model_fn_wan_video = original
    return {"calls": calls, "latents": decoded["latents"],
            "decoded": decoded["video"].float().numpy(), "noise": captured_noise["noise"].float().numpy(),
            "video": np.stack([np.asarray(f) for f in frames]), "clip_seen": pipe.image_encoder.seen,
            "image": image}


def pipeline_golden(rel, dit, vae, base, proj, table, steps: int = 3) -> dict:
    frames, height, width = 81, 16, 32
    inputs = {"image": smooth_video(20, 1, height, width)[0],
              "ref_video": smooth_video(21, frames, height, width),
              "content_video": smooth_video(22, frames, height, width),
              "frames": frames, "height": height, "width": width, "table": table}
    out = {k: inputs[k] for k in ("image", "ref_video", "content_video")}
    out.update(frames=np.int64(frames), height=np.int64(height), width=np.int64(width),
               steps=np.int64(steps), cfg=np.float32(5.0), shift=np.float32(5.0))
    keep_frames = np.array([0, 1, 2, 40, 79, 80])  # decoded floats stored for these frames
    out["decoded_frames"] = keep_frames
    for task in ("i2v", "v2v"):
        run = pipeline_run(rel, dit, vae, base, proj, task, inputs, steps=steps)
        first = run["calls"][0]
        out[f"{task}/noise"] = run["noise"]
        out[f"{task}/clip_image"] = run["clip_seen"][0]  # [1, H, W, 3] what CLIP got
        out[f"{task}/input_image"] = run["image"]
        clip_check = image_tokens(run["clip_seen"][0][0], base, proj)
        assert np.abs(first["clip_feature"] - clip_check).max() < 1e-5
        for k in ("y", "ref_latents", "content_latents"):
            out[f"{task}/{k}"] = first[k]
        calls = run["calls"]  # per step: the prompt's call, then the negative prompt's
        out[f"{task}/timesteps"] = np.stack([c["timestep"] for c in calls[::2]])  # [steps, 1]
        out[f"{task}/contexts"] = np.stack([c["context"] for c in calls[:2]])  # posi, nega
        out[f"{task}/x"] = np.stack([c["x"] for c in calls[::2]])  # [steps, 1, 16, f, h, w]
        out[f"{task}/outs"] = np.stack([c["out"] for c in calls])  # [2 steps, 1, 16, f, h, w]
        out[f"{task}/latents"] = run["latents"]
        out[f"{task}/decoded"] = run["decoded"][:, :, keep_frames]  # [1, 3, k, H, W]
        out[f"{task}/video"] = run["video"][keep_frames]  # uint8 [k, H, W, 3]
        bf = pipeline_run(rel, dit, vae, base, proj, task, inputs, steps=steps, round_timestep=True)
        out[f"{task}/latents_bf16_timestep"] = bf["latents"]
        out[f"{task}/timesteps_bf16"] = np.stack([c["timestep"] for c in bf["calls"][::2]])
        full = pipeline_run(rel, copy.deepcopy(dit).to(torch.bfloat16),
                            copy.deepcopy(vae).to(torch.bfloat16), base, proj, task, inputs,
                            steps=steps, dtype=torch.bfloat16)
        out[f"{task}/latents_bf16_pipeline"] = full["latents"]
        print(f"[{task}] final latents: bf16 timestep vs float32 "
              f"{np.abs(bf['latents'] - run['latents']).max():.3e}; whole-bf16 pipeline vs float32 "
              f"{np.abs(full['latents'] - run['latents']).max():.3e} (latent std "
              f"{run['latents'].std():.3f})")
    return out


# ---------------------------------------------------------------------------- (d) the loader
LOADER = dict(frames=81, height=32, width=48)
LOADER_KEEP = np.array([0, 1, 2, 40, 75, 76, 77, 80])  # frames stored (77+: the camera's last)


def import_loader(root: str):
    """The release's inference_camclone.py as a module (its CamCloneDataset); needs pandas and
    torchvision (see the module docstring)."""
    import importlib.util

    d = sys.modules["diffsynth"]
    d.WanVideoI2VPipeline = sys.modules["diffsynth.pipelines.wan_video_i2v"].WanVideoI2VPipeline
    for name in ("ModelManager", "load_state_dict", "save_video", "VideoData"):
        setattr(d, name, None)  # imported by the script's main, never called here
    spec = importlib.util.spec_from_file_location("release_inference_camclone",
                                                  os.path.join(root, "inference_camclone.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def loader_golden(root: str, out_dir: str) -> dict:
    """The release's CamCloneDataset (infer=True) on small videos and an image of other sizes:
    the first 81 frames in a row (the 77-frame camera reference's last repeated), resized by
    max(W / w, H / h) (PIL bilinear) and centre-cropped, [-1, 1]; the first frame from the
    CSV's first_frame_path, else the content video's frame 0."""
    import imageio
    from PIL import Image

    loader = import_loader(root)
    files = {"camera": os.path.join(out_dir, "release_loader_camera.mp4"),
             "content": os.path.join(out_dir, "release_loader_content.mp4"),
             "first": os.path.join(out_dir, "release_loader_first.png")}
    imageio.mimwrite(files["camera"], smooth_video(30, 77, 64, 112), fps=30, codec="libx264",
                     quality=6, macro_block_size=16)  # 832x480-like aspect, 77 frames: short
    imageio.mimwrite(files["content"], smooth_video(31, 120, 80, 128), fps=15, codec="libx264",
                     quality=6, macro_block_size=16)  # 672x384-like aspect, 120 frames
    Image.fromarray(smooth_video(32, 1, 72, 120)[0]).save(files["first"])
    out = {"frames": np.int64(LOADER["frames"]), "height": np.int64(LOADER["height"]),
           "width": np.int64(LOADER["width"]), "keep": LOADER_KEEP}
    for with_first in (True, False):
        csv = os.path.join(out_dir, ".release_loader.csv")
        cols = "ref_video_path,content_video_path,caption" + (",first_frame_path" if with_first else "")
        row = f"{files['camera']},{files['content']},a caption" + (f",{files['first']}" if with_first else "")
        with open(csv, "w") as f:
            f.write(cols + "\n" + row + "\n")
        try:
            ds = loader.CamCloneDataset(csv, max_num_frames=LOADER["frames"],
                                        num_frames=LOADER["frames"], height=LOADER["height"],
                                        width=LOADER["width"], infer=True)
            item = ds[0]
        finally:
            os.remove(csv)
        key = "first_frame" if with_first else "first_frame_default"
        out[key] = np.asarray(item["first_frame"])  # uint8 [H, W, 3]
        if with_first:
            for name, k in (("camera", "ref_video"), ("content", "content_video")):
                x = item[k].permute(1, 2, 3, 0).numpy()  # [F, H, W, 3] in [-1, 1]
                u8 = np.round((x * 0.5 + 0.5) * 255.0)
                assert np.abs(u8 / 255.0 * 2 - 1 - x).max() < 1e-5  # exactly uint8 steps
                out[f"{name}_frames"] = u8[LOADER_KEEP].astype(np.uint8)
                out[f"{name}_count"] = np.int64(len(u8))
    for name in ("camera", "content"):  # what imageio decodes at full size (frame 0)
        reader = imageio.get_reader(files[name])
        out[f"{name}_raw0"] = np.asarray(reader.get_data(0))
        reader.close()
    return out


# ---------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--release", required=True, help="a checkout of KwaiVGI/CamCloneMaster")
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rel = import_release(args.release)
    os.makedirs(args.out, exist_ok=True)
    dit, vae = tiny_dit(rel), tiny_vae(rel)
    save_weights(os.path.join(args.out, "release_dit.safetensors"), dit.state_dict())
    save_weights(os.path.join(args.out, "release_vae.safetensors"), vae.model.state_dict())
    base, proj, table = fixed_encoders(DIT["text_dim"])
    meta = {"release_commit": release_commit(args.release), "dit": DIT, "image_dim": IMAGE_DIM,
            "vae": VAE, "our_dit": OUR_DIT, "our_vae": OUR_VAE, "prompts": PROMPTS,
            "negative": NEGATIVE, "torch": torch.__version__}
    shared = {"meta": np.array(json.dumps(meta)), "clip_base": base, "clip_proj": proj,
              "prompts": np.array(list(table)), "prompt_embeds": np.stack(list(table.values()))}

    with torch.no_grad():
        golden = dit_golden(rel, dit, vae, base, proj, table)
    path = os.path.join(args.out, "release_dit.npz")
    np.savez_compressed(path, **shared, **golden)
    d = np.abs(golden["i2v/out"] - golden["i2v/out_bf16"]).max()
    print(f"wrote {path}; DiT output, bf16 vs float32 timestep: {d:.3e} "
          f"(output std {golden['i2v/out'].std():.3f})")

    with torch.no_grad():
        golden = pipeline_golden(rel, dit, vae, base, proj, table, steps=args.steps)
    path = os.path.join(args.out, "release_pipeline.npz")
    np.savez_compressed(path, **shared, **golden)
    print(f"wrote {path}")

    try:
        import pandas  # noqa: F401
        import torchvision.transforms.v2  # noqa: F401
    except Exception as e:
        print(f"skipping the loader golden (needs pandas and torchvision: {e})")
    else:
        path = os.path.join(args.out, "release_loader.npz")
        np.savez_compressed(path, meta=shared["meta"], **loader_golden(args.release, args.out))
        print(f"wrote {path}")
    for name in sorted(os.listdir(args.out)):
        if name.startswith("release_"):
            print(f"  {name}: {os.path.getsize(os.path.join(args.out, name)) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
