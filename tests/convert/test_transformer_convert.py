"""Weight import/export of the DiT: layouts, round trips, file formats, and refusals."""

import json
import os
import re

import numpy as np
import pytest

from camclone_jax import convert, models
from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.convert import transformer as conv
from camclone_jax.convert.__main__ import main as convert_main
from tests.torch_peers import diffusers, random_wan, state_dict_numpy, tiny_wan_config, to_torch, torch

# The original Wan 2.1 / DiffSynth names of diffusers' keys (facts from diffusers' conversion
# script), written out independently of the converter's own table; applied in order.
_ORIGINAL_NAMES = [
    (r"^scale_shift_table$", "head.modulation"), (r"\.scale_shift_table$", ".modulation"),
    (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
    (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
    (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
    (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
    (r"condition_embedder\.time_proj", "time_projection.1"),
    (r"condition_embedder\.image_embedder\.norm1", "img_emb.proj.0"),
    (r"condition_embedder\.image_embedder\.ff\.net\.0\.proj", "img_emb.proj.1"),
    (r"condition_embedder\.image_embedder\.ff\.net\.2", "img_emb.proj.3"),
    (r"condition_embedder\.image_embedder\.norm2", "img_emb.proj.4"),
    (r"attn1\.to_out\.0", "self_attn.o"), (r"attn2\.to_out\.0", "cross_attn.o"),
    (r"attn1\.to_([qkv])", r"self_attn.\1"), (r"attn2\.to_([qkv])", r"cross_attn.\1"),
    (r"attn2\.add_k_proj", "cross_attn.k_img"), (r"attn2\.add_v_proj", "cross_attn.v_img"),
    (r"attn2\.norm_added_k", "cross_attn.norm_k_img"),
    (r"attn1\.norm_", "self_attn.norm_"), (r"attn2\.norm_", "cross_attn.norm_"),
    (r"ffn\.net\.0\.proj", "ffn.0"), (r"ffn\.net\.2", "ffn.2"),
    (r"\.norm2\.", ".norm3."), (r"^proj_out", "head.head"),
]


def _to_original(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in _ORIGINAL_NAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def i2v_peer():
    cfg = tiny_wan_config(image=True)
    return cfg, random_wan(cfg, seed=5)


def _assert_trees_equal(a, b):
    fa, fb = utils.flatten_params(a), utils.flatten_params(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def test_original_layout_gives_same_params_as_diffusers(i2v_peer):
    diff_cfg, model = i2v_peer
    cfg = models.DiTConfig.from_diffusers(diff_cfg)
    state = state_dict_numpy(model)
    original = _to_original(state)
    assert "blocks.0.cross_attn.k_img.weight" in original and "head.head.bias" in original
    assert conv.detect_format(original) == "original"
    _assert_trees_equal(conv.params_from_torch(state, cfg, "diffusers"),
                        conv.params_from_torch(original, cfg, "original"))
    inferred = conv.infer_config(original, "original", head_dim=12)
    assert inferred == cfg


def test_diffusers_directory_import_export_round_trip(tmp_path, i2v_peer):
    diff_cfg, model = i2v_peer
    model.save_pretrained(tmp_path / "peer")
    cfg, params = convert.load_transformer(str(tmp_path / "peer"))
    assert cfg == models.DiTConfig.from_diffusers(diff_cfg)
    convert.export_transformer(cfg, params, str(tmp_path / "exported"))
    reloaded = diffusers.WanTransformer3DModel.from_pretrained(tmp_path / "exported").eval()
    theirs, ours = model.state_dict(), reloaded.state_dict()
    assert sorted(theirs) == sorted(ours)
    for k in theirs:
        assert torch.equal(theirs[k], ours[k]), k
    cfg2, params2 = convert.load_transformer(str(tmp_path / "exported"))
    assert cfg2 == cfg
    _assert_trees_equal(params, params2)


def test_converted_directory_and_original_file_round_trip(tmp_path, i2v_peer):
    diff_cfg, model = i2v_peer
    cfg = models.DiTConfig.from_diffusers(diff_cfg)
    params = conv.params_from_torch(state_dict_numpy(model), cfg, "diffusers")
    convert.save_transformer(str(tmp_path / "ours"), cfg, params)
    cfg2, params2 = convert.load_transformer(str(tmp_path / "ours"))
    assert cfg2 == cfg
    _assert_trees_equal(params, params2)
    convert.export_transformer(cfg, params, str(tmp_path / "wan.safetensors"), fmt="original")
    cfg3, params3 = convert.load_transformer(str(tmp_path / "wan.safetensors"), num_heads=2)
    assert cfg3 == cfg
    with pytest.raises(io.WeightFileError, match=f"head count of a {cfg.dim}-wide.*num_heads"):
        convert.load_transformer(str(tmp_path / "wan.safetensors"))  # width not 128k: ambiguous
    _assert_trees_equal(params, params3)


def test_torch_pickles_load_safely_and_code_pickles_are_refused(tmp_path, i2v_peer):
    diff_cfg, model = i2v_peer
    cfg = models.DiTConfig.from_diffusers(diff_cfg)
    original = {k: to_torch(v) for k, v in _to_original(state_dict_numpy(model)).items()}
    # A Lightning-style checkpoint with a wrapper, a prefix, and a bf16 tensor-free extra.
    torch.save({"state_dict": {f"model.{k}": v for k, v in original.items()}, "epoch": 3},
               tmp_path / "step.ckpt")
    loaded_cfg, params = convert.load_transformer(str(tmp_path / "step.ckpt"), num_heads=2)
    assert loaded_cfg == cfg
    _assert_trees_equal(params, conv.params_from_torch(state_dict_numpy(model), cfg, "diffusers"))

    torch.save({"weights": original, "hook": os.system}, tmp_path / "evil.pth")
    with pytest.raises(io.WeightFileError, match="refused to load"):
        convert.load_transformer(str(tmp_path / "evil.pth"))


def test_sharded_diffusers_directory(tmp_path, i2v_peer):
    diff_cfg, model = i2v_peer
    state = state_dict_numpy(model)
    keys = sorted(state)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    os.makedirs(tmp_path / "sharded")
    for name, ks in shards.items():
        io.write_safetensors(str(tmp_path / "sharded" / name), {k: state[k] for k in ks})
    index = {"weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "sharded" / "config.json").write_text(json.dumps(diff_cfg))
    _, params = convert.load_transformer(str(tmp_path / "sharded"))
    _assert_trees_equal(params, conv.params_from_torch(state, models.DiTConfig.from_diffusers(diff_cfg),
                                                       "diffusers"))
    os.remove(tmp_path / "sharded" / "b.safetensors")
    with pytest.raises(io.WeightFileError, match="missing"):
        convert.load_transformer(str(tmp_path / "sharded"))


def test_bad_keys_are_named(i2v_peer):
    diff_cfg, model = i2v_peer
    cfg = models.DiTConfig.from_diffusers(diff_cfg)
    state = state_dict_numpy(model)
    state.pop("blocks.1.attn1.to_q.weight")
    state["blocks.0.extra.weight"] = np.zeros(3, np.float32)
    state["proj_out.bias"] = np.zeros(5, np.float32)
    with pytest.raises(io.WeightFileError) as err:
        conv.params_from_torch(state, cfg, "diffusers")
    msg = str(err.value)
    assert "blocks.1.attn1.to_q.weight" in msg and "blocks.0.extra.weight" in msg
    assert "proj_out.bias: file (5,) vs model (64,)" in msg


def test_truncated_safetensors_is_reported(tmp_path):
    io.write_safetensors(str(tmp_path / "w.safetensors"), {"a": np.ones((64, 64), np.float32)})
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(raw[:-100])
    with pytest.raises(io.WeightFileError, match="past the end"):
        io.read_safetensors(str(tmp_path / "w.safetensors"))


def test_bf16_safetensors_read_without_torch(tmp_path):
    import ml_dtypes

    x = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    io.write_safetensors(str(tmp_path / "b.safetensors"), {"x": x})
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "b.safetensors")["x"],
                       torch.arange(6, dtype=torch.float32).reshape(2, 3).bfloat16())
    np.testing.assert_array_equal(io.read_safetensors(str(tmp_path / "b.safetensors"))["x"], x)


def test_cli_import_export_info_and_no_partial_output(tmp_path, i2v_peer, capsys):
    diff_cfg, model = i2v_peer
    model.save_pretrained(tmp_path / "peer")
    assert convert_main(["import", "--src", str(tmp_path / "peer"), "--out", str(tmp_path / "ours")]) == 0
    assert convert_main(["info", "--src", str(tmp_path / "ours")]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["kind"] == "transformer"
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert convert_main(["export", "--src", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    assert os.path.exists(tmp_path / "back" / "diffusion_pytorch_model.safetensors")
    # Existing output is not overwritten without --overwrite.
    assert convert_main(["import", "--src", str(tmp_path / "peer"), "--out", str(tmp_path / "ours")]) == 2
    # A bad source leaves nothing behind.
    bad = tmp_path / "bad.safetensors"
    io.write_safetensors(str(bad), {"nonsense.weight": np.zeros(2, np.float32)})
    assert convert_main(["import", "--src", str(bad), "--out", str(tmp_path / "never")]) == 2
    assert "cannot tell the checkpoint layout" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "never")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".never")]


def test_atomic_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_safetensors(str(tmp_path / "w.safetensors"), {"a": np.zeros(2, np.float32)})
        with utils.atomic_dir(str(tmp_path / "d")) as tmp:
            open(os.path.join(tmp, "f"), "w").close()
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o755
