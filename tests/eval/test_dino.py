"""DINO ViT and VBench's Subject / Background Consistency: parity with transformers' ViTModel,
weight import, the scores on hand-made features, missing-weights errors and the CLI column."""
import dataclasses
import json
import os

import numpy as np
import pytest

from camclone_jax import evaluate
from camclone_jax import utils
from camclone_jax.convert import dino as convert_dino
from camclone_jax.convert import io
from camclone_jax.data import video
from camclone_jax.eval import consistency
from camclone_jax.eval.networks import dino
from tests.eval.test_cli import _pose_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=32, patch_size=8, layer_norm_eps=1e-6)
TOL = 1e-5  # float32, CPU; measured <= 6e-7


def random_vit(seed=0, pooler=False):
    """A transformers ViTModel with every parameter random (norms and biases included)."""
    torch.manual_seed(seed)
    model = transformers.ViTModel(transformers.ViTConfig(**TINY), add_pooling_layer=pooler)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    """(model, directory written by save_pretrained) of a tiny random ViT with a pooler."""
    model = random_vit(pooler=True)
    path = str(tmp_path_factory.mktemp("dino") / "dino-tiny")
    model.save_pretrained(path)
    return model, path


@pytest.mark.parametrize("hw", [(32, 32), (27, 43), (48, 40)])
def test_parity_with_transformers(hf_vit, hw):
    """Last hidden states and the CLS feature; other sizes interpolate the position table as
    ``interpolate_pos_encoding=True`` does (27 x 43 also drops the partial patches)."""
    model, path = hf_vit
    cfg, params = convert_dino.load_dino(path)
    assert cfg == dino.DinoConfig(image_size=32, patch_size=8, dim=32, num_heads=2, mlp_dim=64,
                                  num_layers=2, eps=1e-6)
    pixels = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref = model(pixel_values=pixels, interpolate_pos_encoding=hw != (32, 32)).last_hidden_state
    ours = np.asarray(dino.encode_images(cfg, params, pixels.permute(0, 2, 3, 1).numpy()))
    assert ours.shape == tuple(ref.shape) == (2, 1 + (hw[0] // 8) * (hw[1] // 8), 32)
    assert np.abs(ours - ref.numpy()).max() <= TOL
    cls = np.asarray(dino.cls_features(cfg, params, pixels.permute(0, 2, 3, 1).numpy()))
    assert np.abs(cls - ref[:, 0].numpy()).max() <= TOL


def test_weight_import_layouts_and_errors(hf_vit, tmp_path):
    model, path = hf_vit
    cfg, params = convert_dino.load_dino(path)
    flat = utils.flatten_params(params)
    saved = io.read_state_dict(path)  # the on-disk (Hub) key names
    np.testing.assert_array_equal(flat["blocks/attn/q/kernel"][1],
                                  saved["encoder.layer.1.attention.attention.query.weight"].T)
    np.testing.assert_array_equal(flat["patch_embedding/kernel"],
                                  saved["embeddings.patch_embeddings.projection.weight"]
                                  .transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat["pos_embedding"], saved["embeddings.position_embeddings"][0])
    assert set(flat) == set(utils.flatten_params(dino.dino_param_shapes(cfg)))
    config_json = utils.read_json(os.path.join(path, "config.json"))
    # transformers >= 5 in-memory names, a "vit." prefix, pytorch_model.bin: the same params
    memory = {"vit." + k: v.numpy() for k, v in model.state_dict().items()}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text(json.dumps(config_json))
    torch.save({k: torch.from_numpy(v) for k, v in memory.items()}, bin_dir / "pytorch_model.bin")
    _, params2 = convert_dino.load_dino(str(bin_dir))
    for key, value in utils.flatten_params(params2).items():
        np.testing.assert_array_equal(value, flat[key])
    # an unknown key inside the model is one error naming it; a config mismatch names shapes
    bad = dict(saved, **{"encoder.layer.0.attention.attention.extra": np.zeros(2, np.float32)})
    with pytest.raises(io.WeightFileError, match=r"unknown keys.*attention\.extra"):
        convert_dino.dino_params_from_torch(bad, cfg)
    with pytest.raises(io.WeightFileError, match="mis-shaped keys"):
        convert_dino.dino_params_from_torch(saved, dataclasses.replace(cfg, mlp_dim=48))
    with pytest.raises(ValueError, match="qkv_bias=False"):
        dino.DinoConfig.from_transformers({**config_json, "qkv_bias": False})


def test_preprocessing_matches_torch_resize():
    """VBench's dino_transform: torchvision Resize(size) (bilinear, antialias=False, rounded back
    to uint8), /255, ImageNet mean/std. The resize equals PyTorch's to float32 rounding (1 ulp
    at 255), so a rare exact .5 may round the other way: one uint8 level, in < 0.1% of values."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 60, 104, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    for h, w in ((32, 55), (90, 131)):  # down and up
        ref = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                              antialias=False).permute(0, 2, 3, 1).numpy()
        assert np.abs(dino.resize_bilinear(frames, h, w) - ref).max() <= 1e-4
    ours = dino.preprocess_frames(frames, 32)
    assert ours.shape == (2, 32, 55, 3)  # int(32 * 104 / 60) = 55
    ref = np.round(torch.nn.functional.interpolate(x, size=(32, 55), mode="bilinear",
                                                   align_corners=False).permute(0, 2, 3, 1).numpy())
    ref = (ref / 255 - np.float32(dino.IMAGENET_MEAN)) / np.float32(dino.IMAGENET_STD)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1 / 255 / 0.224 + 1e-5 and np.mean(diff > 1e-5) < 1e-3
    assert dino.preprocess_frames(frames, 16, mode="square").shape == (2, 16, 16, 3)
    assert dino.vbench_size(1008, 576, 224) == (392, 224)


def test_vbench_scores_on_hand_made_features():
    def embed_from(features):
        return lambda frames: np.asarray(features, np.float64)

    frames = np.zeros((4, 8, 8, 3), np.uint8)
    same = np.tile([[0.6, 0.8]], (4, 1))
    assert consistency.subject_consistency(embed_from(same), frames) == pytest.approx(100.0)
    assert consistency.background_consistency(embed_from(same), frames) == pytest.approx(100.0)
    # f_i at angle a_i: cos(f_i, f_{i-1}) = cos(a_i - a_{i-1}), cos(f_i, f_0) = cos(a_i - a_0)
    angles = np.deg2rad([0.0, 60.0, 120.0, 150.0])
    feats = np.stack([np.cos(angles), np.sin(angles)], 1)
    # i=1: (cos 60 + cos 60) / 2 = 0.5; i=2: (cos 60 + max(0, cos 120)) / 2 = 0.25;
    # i=3: (cos 30 + max(0, cos 150)) / 2 = 0.4330
    expected = 100 * (0.5 + 0.25 + np.cos(np.deg2rad(30)) / 2) / 3
    assert consistency.subject_consistency(embed_from(feats), frames) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2 frames"):
        consistency.subject_consistency(embed_from(same[:1]), frames[:1])


def test_dino_embedder_features(hf_vit):
    """Unit norm, one row per frame, the last partial batch padded; a constant video scores 100."""
    _, path = hf_vit
    embed = consistency.DinoEmbedder(path, batch_size=4)
    frames = np.random.default_rng(1).integers(0, 256, (5, 24, 40, 3), dtype=np.uint8)
    feats = embed(frames)
    assert feats.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(embed(frames[3:5]), feats[3:5], atol=1e-6)
    still = np.repeat(frames[:1], 3, 0)
    assert consistency.subject_consistency(embed, still) == pytest.approx(100.0)


def test_missing_dino_weights_name_the_file(hf_vit, tmp_path):
    hint = r"download facebook/dino-vitb16 \(transformers format\) and pass --dino_weights DIR"
    with pytest.raises(FileNotFoundError, match=f"DINO weights not found at .*nowhere: {hint}"):
        consistency.DinoEmbedder(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"not found at .*empty/config.json: {hint}"):
        consistency.DinoEmbedder(str(empty))
    (empty / "config.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(FileNotFoundError,
                       match=rf"empty/model.safetensors or pytorch_model.bin: {hint}"):
        consistency.DinoEmbedder(str(empty))
    with pytest.raises(ValueError, match="Sub. Cons. needs local DINO weights"):
        consistency.DinoEmbedder(None)


@pytest.fixture(scope="module")
def tiny_videos(clips, tmp_path_factory):
    """generated/ {pan, tilt}: 8 frames of the rendered clips; camera_refs/ their poses."""
    root = tmp_path_factory.mktemp("dino_cli")
    gen, cam = root / "generated", root / "camera_refs"
    gen.mkdir()
    cam.mkdir()
    for name in ("pan", "tilt"):
        frames, c2w, intr = clips[name]
        video.write_mp4(str(gen / f"{name}.mp4"), frames[:8], 15.0)
        _pose_file(cam / f"{name}.txt", c2w[:8], intr[:8])
    return str(gen), str(cam)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random transformers CLIPVisionModel directory (for Bg. Cons.)."""
    torch.manual_seed(2)
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=28, patch_size=7, hidden_act="gelu"))
    path = str(tmp_path_factory.mktemp("clip") / "clip-tiny")
    model.save_pretrained(path)
    return path


def test_cli_consistency_columns(hf_vit, tiny_clip_dir, tiny_videos, tmp_path, capsys):
    _, path = hf_vit
    gen, cam = tiny_videos
    out = str(tmp_path / "report.json")
    evaluate.main(["--generated", gen, "--camera_refs", cam, "--out", out, "--no_fvd",
                   "--dino_weights", path, "--clip_weights", tiny_clip_dir, "--name", "tiny",
                   "--quiet"])
    printed = capsys.readouterr().out
    with open(out) as f:
        saved = json.load(f)
    assert saved["num_evaluated"] == 2, saved["failed"]
    for key in ("SubCons", "BgCons"):
        per = [e[key] for e in saved["per_video"]]
        assert all(0 < v <= 100 for v in per)
        assert saved["summary"][key] == pytest.approx(np.mean(per))
    assert "CLIP-V" not in saved["summary"]  # no content references
    header = printed.splitlines()[0]
    assert "Sub. Cons. ↑" in header and "Bg. Cons. ↑" in header and "| tiny |" in printed


def test_cli_missing_weights_exit_2_before_any_video(tiny_videos, tmp_path, capsys):
    gen, cam = tiny_videos
    for flag, message in (("--dino_weights", "DINO weights not found at"),
                          ("--clip_weights", "CLIP weights not found")):
        with pytest.raises(SystemExit) as exc:
            evaluate.main(["--generated", gen, "--camera_refs", cam, "--out",
                           str(tmp_path / "r.json"), flag, str(tmp_path / "absent")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "absent" in err
    assert not os.path.exists(tmp_path / "r.json")
