"""The one conditioning contract (camclone_jax.tasks): its rules, and that nothing else builds
the DiT's first-frame condition or chooses CLIP's image."""

import ast
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax import tasks
from camclone_jax.models import DiTConfig
from camclone_jax.models.params import first_frame_condition

ROOT = pathlib.Path(__file__).resolve().parents[1]
CFG = DiTConfig(dim=32, ffn_dim=64, num_layers=1, num_heads=2, in_channels=2 * 8 + 4,
                out_channels=8, text_dim=8, freq_dim=16, image_dim=6)
LAT = (2, 3, 4, 6, 8)  # b, f, h, w, C


def _inputs(**kw):
    rng = np.random.default_rng(0)
    lat = {k: jnp.asarray(rng.standard_normal(LAT), jnp.float32)
           for k in ("cam_latents", "content_latents", "image_latents")}
    embeds = jnp.ones((2, 5, 6))
    return lat, tasks.dit_inputs(CFG, task=np.array([0, 1]), image_embeds=embeds, **lat, **kw)


def test_release_rule_both_tasks_keep_the_first_frame():
    lat, out = _inputs()
    assert sorted(out) == ["cam_latents", "content_latents", "first_frame", "image_embeds"]
    np.testing.assert_array_equal(out["cam_latents"], lat["cam_latents"])
    assert not np.any(out["content_latents"][0])  # I2V: no content
    np.testing.assert_array_equal(out["content_latents"][1], lat["content_latents"][1])
    np.testing.assert_array_equal(out["first_frame"], first_frame_condition(lat["image_latents"]))


def test_none_rule_base_and_no_camera():
    lat, none = _inputs(v2v_first_frame="none")
    full = first_frame_condition(lat["image_latents"])
    np.testing.assert_array_equal(none["first_frame"][0], full[0])
    assert not np.any(none["first_frame"][1])
    _, base = _inputs(conditioning="base")  # no references; V2V-drawn half is T2V
    assert "cam_latents" not in base and not np.any(base["first_frame"][1])
    _, nocam = _inputs(conditioning="no_camera")
    assert not np.any(nocam["cam_latents"]) and np.any(nocam["content_latents"][1])


def test_task_names_missing_inputs_and_bad_rules():
    lat = jnp.ones(LAT)
    out = tasks.dit_inputs(CFG.replace(in_channels=8, image_dim=None), task="i2v",
                           cam_latents=lat, content_latents=lat)
    assert sorted(out) == ["cam_latents", "content_latents"] and not np.any(out["content_latents"])
    t2v = CFG.replace(in_channels=8, image_dim=None)  # a T2V base stage: nothing but the target
    assert tasks.dit_inputs(t2v, task=np.array([0, 1]), conditioning="base") == {}
    with pytest.raises(ValueError, match="first-frame condition"):
        tasks.dit_inputs(CFG, task="v2v", cam_latents=lat, content_latents=lat)
    with pytest.raises(ValueError, match="image cross-attention"):
        tasks.dit_inputs(CFG, task="v2v", cam_latents=lat, image_latents=lat)
    with pytest.raises(ValueError, match="v2v_first_frame"):
        tasks.validate(v2v_first_frame="target")
    with pytest.raises(ValueError, match="task must be"):
        tasks.task_ids("t2v", 1)


def test_conditioning_image_and_first_frame_video():
    img = np.full((2, 4, 6, 3), 200, np.uint8)
    np.testing.assert_array_equal(tasks.conditioning_image(img, np.array([0, 1])), img)
    none = tasks.conditioning_image(img, np.array([0, 1]), "none")
    assert np.all(none[0] == 200) and not np.any(none[1])  # black uint8
    flt = tasks.conditioning_image(np.zeros((1, 4, 6, 3), np.float32), "v2v", "none")
    assert np.all(flt == -1.0)  # black in [-1, 1]
    video = tasks.first_frame_video(np.ones((1, 4, 6, 3)), 5)  # [1, 5, 4, 6, 3]
    assert video.shape == (1, 5, 4, 6, 3) and np.all(video[:, 0] == 1) and not np.any(video[:, 1:])


# ----------------------------------------------------------- nothing else builds the inputs
def _sources():
    """(path, source) of every Python module of the package, benchmark and notebook cell."""
    for path in sorted((ROOT / "camclone_jax").rglob("*.py")) + sorted(
            (ROOT / "benchmarks").glob("*.py")):
        yield path, path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        yield path, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"
                              and not "".join(c["source"]).lstrip().startswith(("!", "%")))


# the probes train toy DiTs on random fields, with no first frame by design
PROBES = {"probe_lib.py", "copy_probe.py", "shift_probe.py"}


def test_only_the_contract_builds_first_frame_conditions():
    """No module but camclone_jax/tasks.py (and the definition in models/params.py) calls
    first_frame_condition, makes a black conditioning frame, or zero-fills cond_channels."""
    offenders = []
    for path, source in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("camclone_jax/tasks.py", "camclone_jax/models/params.py") or path.name in PROBES:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                text = ast.unparse(node)
                if name == "first_frame_condition" or (
                        name in ("zeros", "full") and "cond_channels" in text):
                    offenders.append(f"{rel}:{node.lineno}: {text[:80]}")
            if isinstance(node, ast.Name) and node.id == "black":
                offenders.append(f"{rel}:{node.lineno}: a black conditioning frame")
    assert not offenders, "conditioning built outside camclone_jax.tasks:\n" + "\n".join(offenders)


def test_training_clip_tokens_follow_the_rule(tmp_path):
    """train_data.ImageEncoder: V2V examples get their own (the target's) first frame's CLIP
    tokens under the release's rule, a black frame's under "none"."""
    from camclone_jax.convert.encoders import save_clip
    from camclone_jax.models import clip
    from camclone_jax.training.data import ImageEncoder
    cfg = clip.CLIPVisionConfig(dim=16, num_heads=2, mlp_dim=32, num_layers=2, image_size=14,
                                patch_size=7)
    save_clip(str(tmp_path / "clip"), cfg, clip.init_clip_params(cfg, 0))
    first = np.random.default_rng(0).integers(1, 255, (2, 14, 14, 3)).astype(np.uint8)
    batch = {"first_frame": first, "task": np.array([tasks.I2V, tasks.V2V])}
    release = ImageEncoder(str(tmp_path / "clip"))(batch)["image_embeds"]  # [2, 5, 16]
    none = ImageEncoder(str(tmp_path / "clip"), "none")(batch)["image_embeds"]
    alone = ImageEncoder(str(tmp_path / "clip"))({"first_frame": first[1:], "task": np.array(
        [tasks.I2V])})["image_embeds"]
    np.testing.assert_allclose(release[1], alone[0], atol=1e-5)  # V2V: its own first frame
    np.testing.assert_allclose(none[0], release[0], atol=1e-6)
    black = ImageEncoder(str(tmp_path / "clip"))({"first_frame": np.zeros_like(first[:1]),
                                                  "task": np.array([tasks.I2V])})["image_embeds"]
    np.testing.assert_allclose(none[1], black[0], atol=1e-5)  # "none": a black frame
    assert not np.allclose(none[1], release[1])
