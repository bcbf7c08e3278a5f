"""The training job end to end: exact resume, SIGTERM, checkpoints, export, failures."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from camclone_jax.convert.transformer import load_transformer
from camclone_jax.data.synthetic.writer import GeneratorConfig, generate_dataset
from camclone_jax.training import checkpoint as ckpt_lib
from camclone_jax.training import loop as train
from camclone_jax.training.run_config import override
from camclone_jax.utils import flatten_params
from configs import synthetic_tiny

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import camera_readout  # noqa: E402  (benchmarks/camera_readout.py)
import clone_3d_eval  # noqa: E402  (benchmarks/clone_3d_eval.py)
import reference_use  # noqa: E402  (benchmarks/reference_use.py)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    generate_dataset(out, GeneratorConfig(num_groups=1, frames=9, height=32, width=48, seed=0,
                                          preview_triplets=0), progress=False)
    return os.path.join(out, "records")


def tiny_config(records, total_steps=4, **overrides):
    config = synthetic_tiny.get_config()
    config.model.update(dim=32, ffn_dim=64, num_layers=2, num_heads=2, text_dim=16, freq_dim=32,
                        prediction="velocity")  # the 1/t of x-prediction would magnify noise
    config.data.update(kind="mp4", path=records, val_path=records, frames=9, height=32,
                       width=48, num_workers=0, text_len=4)  # pixels through the codec
    config.data.synthetic = None
    config.batch_size = 2
    config.total_steps = total_steps
    config.checkpoint.update(every=2, keep=5)
    config.log_every = 1
    config.eval_every = 0
    config.sample.enabled = False
    config.optim.schedule = "constant"  # a cosine's lr would depend on total_steps
    config.optim.rules = (("self_attn", "train"), (".*", None))  # the paper's rule
    return override(config, overrides)


def trained_params(workdir):
    return flatten_params(load_transformer(os.path.join(workdir, "export"))[1])


@pytest.fixture(scope="module")
def straight(records, tmp_path_factory):
    """8 uninterrupted steps: the reference for the resume tests."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    return workdir, train.train_and_evaluate(tiny_config(records, 8), workdir)


def test_resume_is_exact(records, straight, tmp_path):
    ref_dir, ref = straight
    first = train.train_and_evaluate(tiny_config(records, 4), str(tmp_path))
    second = train.train_and_evaluate(tiny_config(records, 8), str(tmp_path))
    assert second["start_step"] == 4 and second["step"] == 8
    assert first["batch_indices"] + second["batch_indices"] == ref["batch_indices"]
    assert first["losses"] + second["losses"] == ref["losses"]  # bit-identical on CPU
    a, b = trained_params(tmp_path), trained_params(ref_dir)
    assert all(np.array_equal(a[k], b[k]) for k in b)
    assert ref["losses"][-1][1] < ref["losses"][0][1] * 1.5  # sane, finite training
    # Checkpoints every 2 steps (keep 5); the base is referenced, not copied into them.
    ckpts = ckpt_lib.Checkpointer(os.path.join(tmp_path, "checkpoints"), save_every=2, keep=5)
    assert ckpts.all_steps() == [2, 4, 6, 8]
    ckpts.close()
    run = json.load(open(os.path.join(tmp_path, "run.json")))
    assert run["base"] == os.path.join(str(tmp_path), "base")
    state_files = glob.glob(os.path.join(tmp_path, "checkpoints", "8", "state", "**"), recursive=True)
    assert not any("cross_attn" in f or "ffn" in f for f in state_files)


def test_export_is_the_full_trained_model(records, straight):
    workdir, _ = straight
    cfg, params = load_transformer(os.path.join(workdir, "export"))
    base = flatten_params(load_transformer(os.path.join(workdir, "base"))[1])
    flat = flatten_params(params)
    assert set(flat) == set(base) and cfg.num_layers == 2
    moved = {k for k in flat if not np.array_equal(flat[k], base[k])}
    assert moved and all("self_attn" in k for k in moved)
    assert json.load(open(os.path.join(workdir, "export", "codec.json")))["kind"] == "pixel"
    assert json.load(open(os.path.join(workdir, "export", "text.json")))["kind"] == "none"
    # the frames the loss covered, so the sampler knows whether frame 0 was trained
    assert json.load(open(os.path.join(workdir, "export", "objective.json"))) == {
        "loss_from_frame": 0}
    # TensorBoard events and the JSONL log hold the loss of every step.
    assert glob.glob(os.path.join(workdir, "tb", "events.out.tfevents.*"))
    logged = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [m["step"] for m in logged] == list(range(1, 9))
    assert all(m["tokens_per_s"] > 0 and np.isfinite(m["loss"]) for m in logged)


def test_sigterm_saves_and_resume_matches(records, straight, tmp_path):
    ref_dir, _ = straight
    cfg_args = ["--config.model.dim=32", "--config.model.ffn_dim=64", "--config.model.num_layers=2",
                "--config.model.num_heads=2", "--config.model.text_dim=16",
                "--config.model.freq_dim=32", f"--config.data.path={records}",
                "--config.data.kind=mp4", "--config.optim.schedule=constant",
                "--config.model.prediction=velocity",
                "--config.optim.rules=(('self_attn', 'train'), ('.*', None))",
                "--config.data.frames=9", "--config.data.height=32", "--config.data.width=48",
                "--config.data.num_workers=0", "--config.data.text_len=4",
                "--config.batch_size=2", "--config.checkpoint.every=100", "--config.log_every=1",
                "--config.eval_every=0", "--config.sample.enabled=False",
                "--config.clone_check.enabled=False"]
    # demo.py's synthetic block is ignored when data.path is set
    cmd = [sys.executable, "-m", "camclone_jax.train", "--config=configs/synthetic_tiny.py",
           f"--workdir={tmp_path}", "--config.total_steps=8"] + cfg_args
    proc = subprocess.Popen(cmd + ["--config.total_steps=100000"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(tmp_path, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert '"status": "preempted"' in out
    stopped = json.loads(out[out.index("{"):])["step"]
    assert 2 <= stopped < 8, "stop before the 8 steps the reference ran"
    ckpts = ckpt_lib.Checkpointer(os.path.join(tmp_path, "checkpoints"), save_every=100, keep=3)
    assert ckpts.latest_step() == stopped
    ckpts.close()
    resumed = train.train_and_evaluate(tiny_config(records, 8, **{"checkpoint.every": 100}),
                                       str(tmp_path))
    assert resumed["start_step"] == stopped
    a, b = trained_params(tmp_path), trained_params(ref_dir)
    # its first steps ran in another process (compiled there): float32 last bits may differ;
    # Adam moves each weight by about lr = 1e-5 a step, so a wrong step would be far above this
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in b) < 1e-6


def test_a_crash_mid_save_leaves_the_previous_checkpoint(records, tmp_path):
    train.train_and_evaluate(tiny_config(records, 2), str(tmp_path))
    ckpt_dir = os.path.join(tmp_path, "checkpoints")
    # A save of step 4 that died half-way: orbax's temporary directory, never renamed.
    partial = os.path.join(ckpt_dir, "4.orbax-checkpoint-tmp-1234")
    shutil.copytree(os.path.join(ckpt_dir, "2"), partial)
    os.remove(glob.glob(os.path.join(partial, "state", "*"))[0])
    result = train.train_and_evaluate(tiny_config(records, 4), str(tmp_path))
    assert result["start_step"] == 2 and result["step"] == 4


def test_nonfinite_loss_stops_with_the_last_good_checkpoint(records, tmp_path):
    config = tiny_config(records, 6, **{"optim.lr": 1e30, "optim.clip_norm": 0.0,
                                        "optim.warmup_steps": 0, "optim.schedule": "constant"})
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+.*last good checkpoint"):
        train.train_and_evaluate(config, str(tmp_path))
    skip = tiny_config(records, 3, **{"optim.lr": 1e30, "optim.clip_norm": 0.0,
                                      "nonfinite": "skip", "optim.warmup_steps": 0})
    result = train.train_and_evaluate(skip, str(tmp_path / "skip"))
    assert result["status"] == "done" and result["nonfinite_steps"]


def test_bad_setups_name_the_problem(records, tmp_path):
    with pytest.raises(FileNotFoundError, match="camclone_jax.data.synthetic"):
        train.train_and_evaluate(tiny_config(str(tmp_path / "missing")), str(tmp_path / "a"))
    with pytest.raises(ckpt_lib.CheckpointError, match="convert import"):
        train.train_and_evaluate(tiny_config(records, base_checkpoint=str(tmp_path / "nope")),
                                 str(tmp_path / "b"))
    with pytest.raises(ValueError, match="micro-batches"):
        train.train_and_evaluate(tiny_config(records, accum_steps=3), str(tmp_path / "c"))
    typo = subprocess.run([sys.executable, "-m", "camclone_jax.train", "--config=configs/synthetic_tiny.py",
                           f"--workdir={tmp_path}/d", "--config.modle.dim=8"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert typo.returncode != 0 and "modle" in typo.stderr


def test_image_cross_attention_model_gets_clip_tokens(records, tmp_path):
    from camclone_jax.convert.encoders import save_clip
    from camclone_jax.models import clip
    clip_cfg = clip.CLIPVisionConfig(dim=32, num_heads=4, mlp_dim=64, num_layers=2,
                                     image_size=28, patch_size=7)
    save_clip(str(tmp_path / "clip"), clip_cfg, clip.init_clip_params(clip_cfg, 0))
    config = tiny_config(records, 2, clip_checkpoint=str(tmp_path / "clip"),
                         **{"model.image_dim": 32})
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 2 and all(np.isfinite(loss) for _, loss in result["losses"])
    with pytest.raises(FileNotFoundError, match="clip_checkpoint"):
        train.train_and_evaluate(tiny_config(records, 2, **{"model.image_dim": 32}),
                                 str(tmp_path / "run2"))


def test_clone_3d_end_to_end_shortened(tmp_path):
    """configs/clone_3d.py as docs/training.md runs it, shrunk: its world (textured scenes,
    rotations only) rendered by the generator on first use, pre-encoded with the pixel codec,
    read by the Grain loader with the same-scene curriculum; validation with the reference-use
    gaps, export, and the I2V/V2V sample videos. Half the training examples come from the
    wallpaper world of the same geometry (data.wallpaper_mix)."""
    from configs import clone_3d
    config = clone_3d.get_config()
    config.model.update(dim=32, ffn_dim=64, num_layers=2, num_heads=2)
    config.data.update(frames=9, same_scene_steps=20, wallpaper_mix=0.5)
    config.data.wallpaper.world.update(cell_px=8, step_px=4, latent_frames=3, scene_scale=2)
    config.data.synthetic.update(num_groups=1, val_groups=1)
    config.batch_size = 4
    config.total_steps = 30
    config.eval_every = 30
    config.eval_batches = 2
    config.log_every = 10
    config.sample.steps = 2
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["status"] == "done" and result["step"] == 30
    assert np.isfinite(result["val_gaps"][30]["val_camera_gap"])
    assert result["val_losses"][30] < result["val_losses"][0]  # it learns, on held-out scenes
    with open(tmp_path / "data" / "train" / "metadata.json") as f:
        meta = json.load(f)
    assert meta["config"]["moves"] == "pan,tilt,roll" and meta["config"]["scenes"] == "textured"
    assert meta["counts"]["triplets"] == 40  # one triplet per target video
    assert glob.glob(str(tmp_path / "data" / "val" / "latents-pixel-*" / "*.array_record"))
    # benchmarks/reference_use.py on the export: losses with the reference given, zeroed and
    # replaced by the target, on both splits
    dit_cfg, params = load_transformer(str(tmp_path / "export"))
    losses = reference_use.make_losses(config, dit_cfg, (0.9,))
    for split in ("train", "val"):
        got = reference_use.split_losses(losses, params, config, glob.glob(
            str(tmp_path / "data" / split / "latents-pixel-*"))[0], 1)
        assert set(got) == {"given", "zeroed", "target"}
        assert all(v.shape == (1, 4) and np.isfinite(v).all() for v in got.values())
        assert not np.allclose(got["given"], got["target"])  # the reference enters the model
    # benchmarks/camera_readout.py: the supervised probe trains on the training references'
    # image motion (from their poses) and scores the held-out ones against a static camera
    out = tmp_path / "readout.json"
    camera_readout.main([
        "--train", glob.glob(str(tmp_path / "data" / "train" / "latents-pixel-*"))[0],
        "--val", glob.glob(str(tmp_path / "data" / "val" / "latents-pixel-*"))[0],
        "--steps", "2", "--batch", "2", "--dim", "32", "--layers", "1", "--out", str(out)])
    rows = {(r["split"], r["row"]): r["error_px"] for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 6 and all(np.isfinite(v) for v in rows.values())
    assert rows[("held-out", "no motion (static camera)")] > 0.5  # the held-out cameras move
    # benchmarks/clone_3d_eval.py on the export: its samples, with the camera reference
    # zeroed, and with the target itself as camera reference (--copy), scored by the measure
    out = tmp_path / "eval.json"
    clone_3d_eval.main(["--records", str(tmp_path / "data" / "val" / "records"), "--clips", "1",
                        "--tasks", "i2v", "--steps", "1", "--copy", "--out", str(out),
                        "--model", "M=" + str(tmp_path / "export")])
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"M", "M, camera reference zeroed", "M, target as camera reference"} < set(rows)
    assert all(np.isfinite(rows[r]["psnr"]) for r in rows if r.startswith("M"))
    from camclone_jax.data.video import read_video
    for task in ("i2v", "v2v"):
        frames, fps = read_video(result["sample"][task]["path"])
        assert frames.shape == (9, 32, 4 * 32, 3)  # camera | image or content | result | truth
        assert np.isfinite(result["sample"][task]["psnr"])


def test_clone_3d_tele_world_combines_with_a_variant():
    """configs/clone_3d.py:tele,nocam is the no-camera baseline of the 50 mm world; the world
    goes first, then the model's 'channel' (concatenation), then a variant; an unknown part
    names the whole argument."""
    from configs import clone_3d
    wide, tele = clone_3d.get_config("nocam"), clone_3d.get_config("tele,nocam")
    assert (wide.data.synthetic["lens_mm"], tele.data.synthetic["lens_mm"]) == ("", "50")
    assert tele.data.synthetic["max_angle"] == tele.data.synthetic["max_roll"] == 60.0
    assert tele.objective.conditioning == wide.objective.conditioning == "no_camera"
    assert clone_3d.get_config("tele").data.same_scene == 0.75
    chan = clone_3d.get_config("tele,channel,nocam")  # the channel-concatenation model's baseline
    assert (chan.model["concat"], clone_3d.get_config("tele").model["concat"]) == ("channel", "frame")
    assert chan.objective.conditioning == "no_camera" and chan.data.synthetic["lens_mm"] == "50"
    for bad in ("nocam,tele", "tele,nocam,aug", "wide", "channel,tele", "tele,nocam,channel"):
        with pytest.raises(ValueError, match=f"got '{bad}'"):
            clone_3d.get_config(bad)


def test_a_misspelt_synthetic_world_key_is_an_error(tmp_path):
    from camclone_jax.training.data import ensure_dataset
    from configs import clone_3d
    data = clone_3d.get_config().data
    data.synthetic = dict(num_groups=1, max_angel=20.0)
    with pytest.raises(ValueError, match="unknown keys \\['max_angel'\\]"):
        ensure_dataset(data, str(tmp_path))
    assert not os.listdir(tmp_path)  # nothing rendered


def test_base_stage_then_channel_concat_fine_tune(records, tmp_path):
    """The reproduction's chain in miniature: a reference-free base trained from scratch
    (conditioning "base", all params), then a channel-concat CamClone fine-tune from its export:
    the patch embedding grows zero rows for the references, so the fine-tune starts from the
    base's function."""
    import jax.numpy as jnp

    from camclone_jax.models import DiT, DiTConfig

    base_dir = str(tmp_path / "base")
    base = train.train_and_evaluate(tiny_config(
        records, 2, **{"objective.conditioning": "base", "optim.rules": ((".*", "train"),)}),
        base_dir)
    assert base["status"] == "done" and "sample" not in base
    config = tiny_config(records, 2, **{"optim.rules": (("self_attn", "train"),
                                                          ("patch_embedding", "train"),
                                                          (".*", None))})
    config.model["concat"] = "channel"
    config.base_checkpoint = os.path.join(base_dir, "export")
    tuned = train.train_and_evaluate(config, str(tmp_path / "channel"))
    assert tuned["status"] == "done" and np.isfinite(tuned["losses"][-1][1])
    base_cfg, base_params = load_transformer(os.path.join(base_dir, "export"))
    ch_cfg = DiTConfig.from_dict(dict(config.model))
    expanded = ckpt_lib.expand_for_channel_concat(base_params, ch_cfg)
    kernel = expanded["patch_embedding"]["kernel"]  # [1, 2, 2, 3 c_in, dim]
    c_in = base_cfg.in_channels
    assert kernel.shape[3] == 3 * c_in and not np.any(kernel[..., c_in:, :])
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 3, 4, 6, base_cfg.out_channels)), jnp.float32)
    refs = [jnp.asarray(rng.standard_normal(x.shape), jnp.float32) for _ in range(2)]
    text = jnp.zeros((1, 4, base_cfg.text_dim))
    t = jnp.array([400.0])
    ff = jnp.zeros(x.shape[:-1] + (base_cfg.cond_channels,))
    want = DiT(base_cfg).apply({"params": base_params}, x, t, text, first_frame=ff)
    got = DiT(ch_cfg).apply({"params": expanded}, x, t, text, cam_latents=refs[0],
                            content_latents=refs[1], first_frame=ff)
    np.testing.assert_allclose(got, want, atol=1e-5)  # zero rows: the references are ignored
    with pytest.raises(ckpt_lib.CheckpointError, match="patch embedding takes"):
        ckpt_lib.expand_for_channel_concat(base_params, ch_cfg.replace(in_channels=c_in + 4,
                                                                      out_channels=c_in))
