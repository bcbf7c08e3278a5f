"""Sampling end to end on tiny random models: the CLI (I2V, V2V, batch, odd and bad inputs) and
the library (determinism, one compilation, sharded == single device, I2V-base conditioning)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import imageio.v2 as imageio
import jax
import numpy as np
import pytest

from camclone_jax import inference, sharding
from camclone_jax.convert.transformer import save_transformer
from camclone_jax.data import reference, video
from camclone_jax.data.codec import PixelCodec
from camclone_jax.inference import cli as sample
from camclone_jax.inference.prompts import WAN_NEGATIVE_PROMPT, prompt_key
from camclone_jax.models import DiTConfig, param_shapes

C = PixelCodec().latent_channels  # 192
CFG = DiTConfig(dim=32, ffn_dim=64, num_layers=2, num_heads=2, in_channels=C, out_channels=C,
                text_dim=8, freq_dim=16, attention="xla")
SHAPE = ["--frames", "5", "--height", "32", "--width", "48", "--steps", "2"]
PROMPTS = ["a dog on a beach", "a red car", WAN_NEGATIVE_PROMPT]


def random_params(cfg, seed=0):
    """Random DiT params from the shapes alone (no init compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(cfg))


def moving_video(n, h, w, seed=0):
    """A textured square sliding right over noise: uint8 [n, h, w, 3]."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 80, (1, h, w, 3), dtype=np.uint8), n, axis=0)
    side = max(4, h // 3)
    for k in range(n):
        x = (k * max(1, w // (2 * n))) % (w - side)
        frames[k, h // 3:h // 3 + side, x:x + side] = (200, 120 + k, 40)
    return frames


def write_prompt_cache(path, prompts, dim, length=4):
    os.makedirs(os.path.join(path, "emb"))
    entries, rng = {}, np.random.default_rng(1)
    for p in prompts:
        rel = f"emb/{prompt_key(p)}.npy"
        np.save(os.path.join(path, rel), rng.standard_normal((3, dim)).astype(np.float32))
        entries[prompt_key(p)] = {"prompt": p, "length": 3, "file": rel}
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"max_length": length, "dim": dim, "prompts": entries,
                   "negative_prompt": WAN_NEGATIVE_PROMPT}, f)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    a = {k: str(root / v) for k, v in dict(
        ckpt="ckpt_notext", ckpt_text="ckpt_text", bare="ckpt_bare", cache="prompts",
        cam="cam.mp4", content="content.mp4", image="first.png", odd="odd_25fps.mp4",
        portrait="portrait.mp4", corrupt="corrupt.mp4").items()}
    params = random_params(CFG)
    for name, text in (("ckpt", {"kind": "none", "text_len": 4}), ("ckpt_text", None),
                       ("bare", None)):
        save_transformer(a[name], CFG, params)
        if name != "bare":
            with open(os.path.join(a[name], "codec.json"), "w") as f:
                json.dump(PixelCodec().to_dict(), f)
        if text:
            with open(os.path.join(a[name], "text.json"), "w") as f:
                json.dump(text, f)
    write_prompt_cache(a["cache"], PROMPTS, CFG.text_dim)
    video.write_mp4(a["cam"], moving_video(9, 64, 96), fps=16)
    video.write_mp4(a["content"], moving_video(9, 64, 96, seed=1), fps=16)
    imageio.imwrite(a["image"], moving_video(1, 64, 96, seed=2)[0])
    video.write_mp4(a["odd"], moving_video(17, 360, 640, seed=3), fps=25)
    video.write_mp4(a["portrait"], moving_video(9, 64, 36, seed=4), fps=16)
    with open(a["corrupt"], "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    return a


def coarse(frame):
    """Grey 2x2-block means of a [32, 48, 3] frame (what survives H.264's chroma subsampling)."""
    return frame.astype(np.float32).reshape(16, 2, 24, 2, 3).mean((1, 3, 4))


def run_cli(*argv):
    return sample.main([str(x) for x in argv] + ["--no_progress"])


# ------------------------------------------------------------------------------------- CLI
def test_i2v_and_v2v_write_playable_mp4s(assets, tmp_path, capsys):
    out = tmp_path / "i2v.mp4"
    assert run_cli("--checkpoint", assets["ckpt"], "--camera_ref", assets["cam"], "--image",
                   assets["image"], "--out", out, "--side_by_side", *SHAPE) == 0
    frames, fps = video.read_video(str(out))
    assert frames.shape == (5, 32, 48, 3) and fps == 16
    image = coarse(reference.load_image(assets["image"], 32, 48))
    assert np.abs(coarse(frames[0]) - image).mean() < 3  # the first frame is the image
    sbs, _ = video.read_video(str(tmp_path / "i2v_side_by_side.mp4"))
    assert sbs.shape == (5, 32, 144, 3)  # camera ref | first frame | result
    assert np.abs(coarse(sbs[2, :, 48:96]) - image).mean() < 3
    log = capsys.readouterr().out
    assert "wrote" in log and "i2v 5x32x48" in log and "peak device memory" in log

    out = tmp_path / "v2v.mp4"
    assert run_cli("--checkpoint", assets["ckpt"], "--camera_ref", assets["cam"],
                   "--content_ref", assets["content"], "--out", out, "--solver", "unipc",
                   *SHAPE) == 0
    frames, _ = video.read_video(str(out))
    assert frames.shape == (5, 32, 48, 3)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary leftovers


def test_camera_move_renders_the_reference_first(assets, tmp_path, capsys):
    """sample --camera_move: the move's reference goes beside --out (video and poses), then is
    cloned; it replaces --camera_ref, and giving both is a one-line error (exit 2)."""
    out = tmp_path / "moved.mp4"
    assert run_cli("--checkpoint", assets["ckpt"], "--camera_move", "pan left 10 deg",
                   "--image", assets["image"], "--out", out, *SHAPE) == 0
    assert video.read_video(str(out))[0].shape == (5, 32, 48, 3)
    assert video.read_video(str(tmp_path / "moved_camera_ref.mp4"))[0].shape == (5, 32, 48, 3)
    with open(tmp_path / "moved_camera_ref.json") as f:
        assert len(json.load(f)["c2w"]) == 5
    assert "camera reference: " in capsys.readouterr().out
    assert run_cli("--checkpoint", assets["ckpt"], "--camera_move", "pan left 10 deg",
                   "--camera_ref", assets["cam"], "--image", assets["image"], "--out",
                   tmp_path / "both.mp4", *SHAPE) == 2
    assert "instead of --camera_ref" in capsys.readouterr().err


def test_odd_reference_videos(assets, tmp_path, capsys):
    # 25 fps, 17 frames, 640x360: fps-aware sampling at 16 fps, resized and centre-cropped
    out = tmp_path / "odd.mp4"
    args = ["--checkpoint", assets["ckpt"], "--camera_ref", assets["odd"], "--image",
            assets["image"], "--height", "32", "--width", "48", "--steps", "2",
            "--sampling", "fps"]
    assert run_cli(*args, "--frames", "9", "--out", out) == 0
    assert video.read_video(str(out))[0].shape == (9, 32, 48, 3)
    # 17 output frames at 16 fps need 1 s = 26 source frames: too short unless asked to loop/pad
    out = tmp_path / "long.mp4"
    assert run_cli(*args, "--frames", "17", "--out", out) == 2
    err = capsys.readouterr().err
    assert "too short" in err and "--short loop" in err and not out.exists()
    assert run_cli(*args, "--frames", "17", "--short", "pad", "--out", out) == 0
    assert video.read_video(str(out))[0].shape == (17, 32, 48, 3)
    # a portrait reference for a landscape clip: refused by default, letterboxed on request
    out = tmp_path / "portrait.mp4"
    base = ["--checkpoint", assets["ckpt"], "--camera_ref", assets["portrait"], "--image",
            assets["image"], "--out", out, *SHAPE]
    assert run_cli(*base) == 2
    assert "--fit pad" in capsys.readouterr().err and not out.exists()
    assert run_cli(*base, "--fit", "pad") == 0
    assert video.read_video(str(out))[0].shape == (5, 32, 48, 3)


@pytest.mark.parametrize("case,match", [
    ("missing_camera", "camera_ref not found"),
    ("image_as_camera", "is a still image"),
    ("video_as_image", "is a video"),
    ("corrupt_camera", "cannot read|truncated or corrupt"),
    ("frames", r"frames=6 must be 1 \+ 4k"),
    ("height", "height=40 must be a positive multiple of 16"),
    ("no_first_frame", "give an image"),
    ("cfg_without_text", "nothing to guide"),
    ("no_codec", "no codec"),
    ("no_text", "no text conditioning"),
    ("t5_without_tokenizer", "both --t5"),
    ("not_mp4", "must end in .mp4"),
    ("uncached_prompt", "not in the cache"),
    ("bad_mesh", "bad --mesh"),
])
def test_bad_inputs_clear_errors_and_no_output(assets, tmp_path, capsys, case, match):
    out = tmp_path / "out.mp4"
    args = {"--checkpoint": assets["ckpt"], "--camera_ref": assets["cam"],
            "--image": assets["image"], "--out": out}
    extra = list(SHAPE)
    if case == "missing_camera":
        args["--camera_ref"] = tmp_path / "nope.mp4"
    elif case == "image_as_camera":
        args["--camera_ref"] = assets["image"]
    elif case == "video_as_image":
        args["--image"] = assets["content"]
    elif case == "corrupt_camera":
        args["--camera_ref"] = assets["corrupt"]
    elif case == "frames":
        extra[1] = "6"
    elif case == "height":
        extra[3] = "40"
    elif case == "no_first_frame":
        del args["--image"]
    elif case == "cfg_without_text":
        extra += ["--cfg", "5"]
    elif case == "no_codec":
        args["--checkpoint"] = assets["bare"]
        extra += ["--prompt_cache", assets["cache"]]
    elif case == "no_text":
        args["--checkpoint"] = assets["ckpt_text"]
    elif case == "t5_without_tokenizer":
        args["--checkpoint"] = assets["ckpt_text"]
        extra += ["--t5", assets["cache"]]
    elif case == "not_mp4":
        args["--out"] = tmp_path / "out.gif"
    elif case == "uncached_prompt":
        args["--checkpoint"] = assets["ckpt_text"]
        extra += ["--prompt_cache", assets["cache"], "--prompt", "never cached"]
    elif case == "bad_mesh":
        extra += ["--mesh", "data:2"]
    argv = [x for kv in args.items() for x in kv] + extra
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(match, err), err
    assert not os.listdir(tmp_path)  # nothing written, not even a temporary file


def test_batch_jobs(assets, tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    rows = ["ref_video_path,image,content_video_path,caption,out,seed,cfg",
            f"{assets['cam']},{assets['image']},,{PROMPTS[0]},a.mp4,1,",
            f"{assets['cam']},,{assets['content']},{PROMPTS[1]},b.mp4,2,1",
            f"{assets['portrait']},{assets['image']},,{PROMPTS[0]},bad.mp4,3,"]
    jobs.write_text("\n".join(rows) + "\n")
    assert run_cli("--checkpoint", assets["ckpt_text"], "--prompt_cache", assets["cache"],
                   "--jobs", jobs, *SHAPE) == 1
    captured = capsys.readouterr()
    assert "job 3" in captured.err and "1 of 3 jobs failed" in captured.err
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.mp4", "jobs.csv"]
    for name in ("a.mp4", "b.mp4"):
        assert video.read_video(str(tmp_path / name))[0].shape == (5, 32, 48, 3)
    bad = tmp_path / "jobs.jsonl"
    bad.write_text(json.dumps({"camera_ref": assets["cam"], "colour": "red"}) + "\n")
    assert run_cli("--checkpoint", assets["ckpt"], "--jobs", bad, *SHAPE) == 2
    assert "unknown field 'colour'" in capsys.readouterr().err


def test_release_csv_as_it_ships(assets, tmp_path, capsys):
    """The release's CSV layout: its four columns (first_frame_path included, given together
    with a content video), paths from the repository root while the CSV sits two folders
    down, and references shorter than --frames (read from the start, the last frame held)."""
    root = tmp_path / "repo"
    (root / "demo" / "example_data").mkdir(parents=True)
    (root / "demo" / "example_csv" / "infer").mkdir(parents=True)
    for key, name in (("cam", "cam.mp4"), ("content", "content.mp4"), ("image", "first.png")):
        shutil.copy(assets[key], root / "demo" / "example_data" / name)
    jobs = root / "demo" / "example_csv" / "infer" / "jobs.csv"
    jobs.write_text("ref_video_path,content_video_path,caption,first_frame_path\n"
                    "demo/example_data/cam.mp4,demo/example_data/content.mp4,a dog,"
                    "demo/example_data/first.png\n"
                    "demo/example_data/cam.mp4,demo/example_data/content.mp4,a dog,\n")
    out = tmp_path / "out"
    shape = ["--frames", "13", "--height", "32", "--width", "48", "--steps", "2"]  # 9-frame refs
    assert run_cli("--checkpoint", assets["ckpt"], "--jobs", jobs, "--out_dir", out,
                   *shape) == 0, capsys.readouterr().err
    for name in ("job_0001.mp4", "job_0002.mp4"):
        assert video.read_video(str(out / name))[0].shape == (13, 32, 48, 3)
    # this T2V-style model pins frame 0 to an explicitly given image (job 1) only
    first = [video.read_video(str(out / n))[0][0] for n in ("job_0001.mp4", "job_0002.mp4")]
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("damaged", ["_METADATA", "data"])
def test_a_truncated_export_is_named_with_exit_2(assets, tmp_path, capsys, damaged):
    ckpt = tmp_path / "export"
    shutil.copytree(assets["ckpt"], ckpt)
    files = sorted((p for p in (ckpt / "params").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    victim = next(p for p in reversed(files) if (p.name == "_METADATA") == (damaged == "_METADATA"))
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    out = tmp_path / "out.mp4"
    assert run_cli("--checkpoint", ckpt, "--camera_ref", assets["cam"], "--image",
                   assets["image"], "--out", out, *SHAPE) == 2
    err = capsys.readouterr().err
    assert f"error: {ckpt}: the converted model's params/ is truncated or corrupt" in err, err
    assert not out.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_sampling_within_a_step_and_writes_nothing(assets, tmp_path, signum):
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "camclone_jax.sample", "--checkpoint", assets["ckpt"],
         "--camera_ref", assets["cam"], "--image", assets["image"], "--out", str(out),
         "--frames", "5", "--height", "32", "--width", "48", "--steps", "100000"],
        stderr=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    seen = b""
    while not re.search(rb"denoising: .* [1-9]\d*/100000", seen):  # steps are being done
        chunk = proc.stderr.read1(4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    sent = time.monotonic()
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1].decode(errors="replace")
    assert proc.returncode == 128 + signum, err
    assert time.monotonic() - sent < 20
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: stopped after denoising step" in err, err
    assert "Traceback" not in err, err
    assert not os.listdir(tmp_path)  # no partial or temporary file


# --------------------------------------------------------------------------------- library
class RandomText(inference.TextSource):
    """Fixed random embeddings per prompt (guidance possible)."""

    def embed(self, prompts):
        return np.stack([np.random.default_rng(len(p)).standard_normal((4, CFG.text_dim))
                         .astype(np.float32) for p in prompts])


def test_determinism_and_one_compilation(assets):
    pipe = inference.CamClonePipeline.from_checkpoint(assets["ckpt_text"],
                                                      prompt_cache=assets["cache"])
    cam = moving_video(9, 32, 48)
    kw = dict(image=cam[0], frames=5, height=32, width=48, steps=3, progress=True)
    a = pipe.generate(cam, PROMPTS[0], seed=0, **kw)
    before = pipe.traces
    b = pipe.generate(cam, PROMPTS[0], seed=0, **kw)
    c = pipe.generate(cam, PROMPTS[1], seed=1, shift=3.0, cfg=4.0, **kw)
    assert pipe.traces == before  # same shapes: the loop compiled once
    d = pipe.generate(cam, PROMPTS[0], seed=0, cfg_batched=False, **kw)  # two calls per step
    np.testing.assert_allclose(d.latents, a.latents, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(a.video, b.video)
    np.testing.assert_array_equal(a.latents, b.latents)
    assert not np.array_equal(a.latents, c.latents)
    assert a.task == "i2v" and a.video.shape == (5, 32, 48, 3) and a.latents.shape == (2, 4, 6, C)
    np.testing.assert_array_equal(a.video[0], cam[0])  # frame replacement pins the image
    assert set(a.seconds) == {"encode", "denoise", "decode"} and a.peak_memory["host"] > 0


def test_no_camera_option_ignores_the_camera_reference(assets):
    """no_camera (the no-camera ablation): the camera latent is zeroed, so the sample does not
    depend on which camera reference is given; without it, it does."""
    pipe = inference.CamClonePipeline.from_checkpoint(assets["ckpt_text"],
                                                      prompt_cache=assets["cache"])
    cam_a, cam_b = moving_video(9, 32, 48, seed=0), moving_video(9, 32, 48, seed=1)
    kw = dict(image=cam_a[0], frames=5, height=32, width=48, steps=2, progress=False)
    a = pipe.generate(cam_a, PROMPTS[0], no_camera=True, **kw)
    b = pipe.generate(cam_b, PROMPTS[0], no_camera=True, **kw)
    np.testing.assert_array_equal(a.latents, b.latents)
    c = pipe.generate(cam_b, PROMPTS[0], **kw)
    assert not np.array_equal(b.latents, c.latents)


@pytest.mark.parametrize("axes", [{"data": 2, "context": 4},
                                  {"fsdp": 2, "context": 2, "tensor": 2}])
def test_sharded_sampling_matches_one_device(axes):
    cam, content = moving_video(9, 32, 48), moving_video(9, 32, 48, seed=5)
    kw = dict(content_ref=content, frames=5, height=32, width=48, steps=2, seed=3, progress=False)
    params = random_params(CFG)
    single = inference.CamClonePipeline(CFG, params, PixelCodec(), RandomText(), dtype="float32")
    want = single.generate(cam, "a prompt", **kw).latents  # guided: the cond/uncond pair
    mesh = sharding.make_mesh(axes)
    sharded = inference.CamClonePipeline(CFG, params, PixelCodec(), RandomText(), mesh=mesh,
                                         dtype="float32")
    got = sharded.generate(cam, "a prompt", **kw).latents
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    q = sharded.params()["blocks"]["self_attn"]["q"]["kernel"]
    assert len(q.sharding.device_set) == 8
    with pytest.raises(ValueError, match="does not divide the batch of 1"):
        sharded.generate(cam, "a prompt", cfg=1.0, **kw)  # no pair to split over data/fsdp


def test_i2v_base_model_uses_first_frame_channels(assets):
    cfg = CFG.replace(in_channels=2 * C + 4)  # mask (4) + first-frame latent (C) channels
    pipe = inference.CamClonePipeline(cfg, random_params(cfg, 1), PixelCodec(), RandomText(),
                                      dtype="float32")
    cam = moving_video(9, 32, 48)
    kw = dict(frames=5, height=32, width=48, steps=2, cfg=1.0, progress=False)
    content = moving_video(9, 32, 48, seed=7)
    result = pipe.generate(cam, "x", content_ref=content, **kw)
    # V2V, the release's rule: the content video's first frame conditions it
    assert result.task == "v2v" and result.video.shape == (5, 32, 48, 3)
    np.testing.assert_array_equal(result.first_frame, content[0])
    # an image given with the content video is its first frame (the release's
    # first_frame_path): the same as a content video that starts with that image
    image = moving_video(9, 32, 48, seed=8)[0]
    starts = np.concatenate([image[None], content[1:]])  # [9, 32, 48, 3]
    given = pipe.generate(cam, "x", content_ref=starts, image=image, **kw)
    default = pipe.generate(cam, "x", content_ref=starts, **kw)
    np.testing.assert_array_equal(given.latents, default.latents)
    assert not np.allclose(given.latents, result.latents)
    # the earlier rule: no first frame (zero mask + latent channels), whatever the content
    none = pipe.generate(cam, "x", content_ref=starts, v2v_first_frame="none", **kw)
    assert none.first_frame is None and not np.allclose(none.latents, default.latents)
    with pytest.raises(ValueError, match="v2v_first_frame='none'"):
        pipe.generate(cam, "x", image=image, content_ref=content, v2v_first_frame="none", **kw)
    # task i2v with a content video (the release's --cameraclone_type i2v): its latent is
    # zeroed and its first frame kept, i.e. I2V on that frame
    as_i2v = pipe.generate(cam, "x", content_ref=content, task="i2v", **kw)
    i2v = pipe.generate(cam, "x", image=content[0], **kw)
    assert as_i2v.task == "i2v"
    np.testing.assert_array_equal(as_i2v.latents, i2v.latents)
    # I2V: the image enters through the first-frame channels, so it changes the result.
    a, b = (pipe.generate(cam, "x", image=moving_video(9, 32, 48, seed=s)[0], **kw)
            for s in (7, 8))
    assert a.task == "i2v" and not np.allclose(a.latents, b.latents)
    with pytest.raises(ValueError, match="needs a content video"):
        pipe.generate(cam, "x", image=cam[0], task="v2v", **kw)
    with pytest.raises(ValueError, match="first-frame channels"):
        inference.CamClonePipeline(CFG.replace(in_channels=C + 5), random_params(
            CFG.replace(in_channels=C + 5)), PixelCodec(), RandomText())
    clip_cfg = CFG.replace(image_dim=16)
    clip_dir = os.path.join(os.path.dirname(assets["ckpt"]), "ckpt_clip")
    save_transformer(clip_dir, clip_cfg, random_params(clip_cfg))
    with open(os.path.join(clip_dir, "codec.json"), "w") as f:
        json.dump({"kind": "pixel"}, f)
    with pytest.raises(ValueError, match="image cross-attention .*pass --clip PATH"):
        inference.CamClonePipeline.from_checkpoint(clip_dir, prompt_cache=assets["cache"])


def test_first_frame_pinned_for_models_trained_from_frame_1(tmp_path):
    """An export whose objective.json says the loss began at frame 1 (configs/clone_3d.py):
    its frame 0 was never scored, so the sampler pins latent frame 0 to the given first frame
    (I2V and V2V alike); an export without it draws frame 0 itself."""
    cfg = CFG.replace(in_channels=2 * C + 4)
    for name, objective in (("pinned", {"loss_from_frame": 1}), ("drawn", None)):
        save_transformer(str(tmp_path / name), cfg, random_params(cfg, 2))
        extra = {"codec.json": PixelCodec().to_dict(),
                 "text.json": {"kind": "none", "text_len": 1, "text_dim": CFG.text_dim}}
        if objective:
            extra[inference.pipeline.OBJECTIVE_FILE] = objective
        for file, value in extra.items():
            with open(tmp_path / name / file, "w") as f:
                json.dump(value, f)
    pinned = inference.CamClonePipeline.from_checkpoint(str(tmp_path / "pinned"))
    drawn = inference.CamClonePipeline.from_checkpoint(str(tmp_path / "drawn"))
    assert pinned.pin_first_frame and not drawn.pin_first_frame
    cam, content = moving_video(9, 32, 48), moving_video(9, 32, 48, seed=3)
    kw = dict(frames=5, height=32, width=48, steps=2, cfg=1.0, progress=False)
    for extra in (dict(image=cam[0]), dict(content_ref=content)):  # I2V; V2V (content frame 0)
        first = cam[0] if "image" in extra else content[0]
        a, b = pinned.generate(cam, **extra, **kw), drawn.generate(cam, **extra, **kw)
        np.testing.assert_array_equal(a.video[0], first)  # the pixel codec is exact
        assert np.abs(b.video[0].astype(int) - first).mean() > 10  # random model: its own
        assert not np.allclose(a.latents[1:], b.latents[1:])  # the pinned frame 0 conditions


def test_wan_vae_and_umt5_encoder_path(assets, tmp_path, capsys):
    """--vae (Wan VAE codec) and --t5/--tokenizer (JAX umT5, freed after encoding), V2V."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    from camclone_jax.convert.vae import save_vae
    from camclone_jax.models.vae import WanVAE, WanVAEConfig

    vae_cfg = WanVAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                           latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4)
    save_vae(str(tmp_path / "vae"), vae_cfg, WanVAE(vae_cfg).init_params(jax.random.key(0)))
    torch.manual_seed(0)
    t5_cfg = transformers.UMT5Config(vocab_size=48, d_model=16, d_kv=4, num_heads=4, d_ff=24,
                                     num_layers=2, relative_attention_num_buckets=8,
                                     relative_attention_max_distance=16, dropout_rate=0.0)
    transformers.UMT5EncoderModel(t5_cfg).eval().save_pretrained(str(tmp_path / "t5"))
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(PROMPTS[:2] * 4, trainers.UnigramTrainer(
        vocab_size=40, unk_token="<unk>", special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = CFG.replace(in_channels=4, out_channels=4, text_dim=16)
    save_transformer(str(tmp_path / "ckpt"), cfg, random_params(cfg))

    out = tmp_path / "out" / "vae.mp4"
    assert sample.main(["--checkpoint", str(tmp_path / "ckpt"), "--vae", str(tmp_path / "vae"),
                        "--t5", str(tmp_path / "t5"),
                        "--tokenizer", str(tmp_path / "tokenizer.json"),
                        "--camera_ref", assets["cam"], "--content_ref", assets["content"],
                        "--prompt", PROMPTS[0], "--out", str(out), "--frames", "1",
                        "--height", "32", "--width", "48", "--steps", "2"]) == 0
    assert video.read_video(str(out))[0].shape == (1, 32, 48, 3)
    assert "v2v 1x32x48" in capsys.readouterr().out


def test_mesh_specs():
    assert sample.parse_mesh("data=2,context=4") == {"data": 2, "context": 4}
    assert sample.parse_mesh(None) is None and sample.parse_mesh("auto") == "auto"
    # the CFG pair over data, the rest over context where it divides the tokens
    assert inference.auto_mesh_axes(8, 2, 3 * 21 * 30 * 52) == {"data": 2, "context": 4}
    assert inference.auto_mesh_axes(8, 1, 36) == {"data": 1, "context": 4}  # 8 does not divide 36
    assert inference.auto_mesh_axes(1, 2, 36) == {"data": 1, "context": 1}
