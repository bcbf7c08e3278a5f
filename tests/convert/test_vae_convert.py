"""Wan VAE weight import/export: both key layouts, file formats, round trips, refusals."""

import json
import os
import re

import jax
import numpy as np
import pytest

from camclone_jax import utils
from camclone_jax.convert import io
from camclone_jax.convert import vae as conv
from camclone_jax.models.vae import WanVAEConfig
from tests.torch_peers import diffusers, random_wan_vae, state_dict_numpy, torch

# The original Wan 2.1 names (wan/modules/vae.py) of diffusers' keys, written out independently of
# the converter's own mapping and applied in order: residual-block internals first, then the
# top-level renames. Decoder stages are flat in the original: (num_res_blocks + 1) residual blocks
# then the upsampler per stage.
_ORIGINAL_NAMES = [
    (r"\.norm1\.gamma$", ".residual.0.gamma"), (r"\.conv1\.(weight|bias)$", r".residual.2.\1"),
    (r"\.norm2\.gamma$", ".residual.3.gamma"), (r"\.conv2\.(weight|bias)$", r".residual.6.\1"),
    (r"\.conv_shortcut\.", ".shortcut."),
    (r"^quant_conv\.", "conv1."), (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"\.norm_out\.", ".head.0."), (r"\.conv_out\.", ".head.2."),
    (r"\.mid_block\.resnets\.0\.", ".middle.0."), (r"\.mid_block\.attentions\.0\.", ".middle.1."),
    (r"\.mid_block\.resnets\.1\.", ".middle.2."),
    (r"^encoder\.down_blocks\.", "encoder.downsamples."),
]


def to_original(state: dict, num_res_blocks: int) -> dict:
    """A diffusers AutoencoderKLWan state dict renamed to the Wan2.1_VAE.pth layout."""
    per = num_res_blocks + 2
    out = {}
    for key, value in state.items():
        for pattern, repl in _ORIGINAL_NAMES:
            key = re.sub(pattern, repl, key)
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                     lambda m: f"decoder.upsamples.{int(m[1]) * per + int(m[2])}.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.upsamples.{int(m[1]) * per + per - 1}.", key)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def peer():
    """(diffusers model, its config as ours, its numpy state dict)."""
    model = random_wan_vae(seed=2)
    return model, conv.vae_config_from_diffusers(dict(model.config)), state_dict_numpy(model)


def assert_same_params(a, b):
    fa, fb = utils.flatten_params(a), utils.flatten_params(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


# ------------------------------------------------------------------------------------ layouts
def test_original_names_agree_with_diffusers_own_converter(peer):
    """Our test mapping and the converter's agree with diffusers' single-file converter."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    _, config, state = peer
    original = to_original(state, config.num_res_blocks)
    assert "decoder.upsamples.4.shortcut.weight" in original  # stage 1, first residual block
    assert "decoder.upsamples.3.resample.1.weight" in original  # stage 0 upsampler
    back = convert_wan_vae_to_diffusers(original)
    assert sorted(back) == sorted(state)
    assert all(back[k] is state[k] for k in state)
    assert {conv.original_key(k, config) for k in state} == set(original)


def test_both_layouts_give_identical_params(peer):
    _, config, state = peer
    from_diffusers = conv.vae_params_from_diffusers(state, config)
    from_original = conv.vae_params_from_original(to_original(state, config.num_res_blocks), config)
    assert_same_params(from_diffusers, from_original)
    kernel = from_diffusers["encoder"]["down_blocks"]["5"]["time_conv"]["kernel"]  # [3, 1, 1, 8, 8]
    torch_weight = state["encoder.down_blocks.5.time_conv.weight"]  # [8, 8, 3, 1, 1]
    assert kernel.shape == (3, 1, 1, 8, 8)
    np.testing.assert_array_equal(kernel[:, 0, 0], torch_weight[:, :, :, 0, 0].transpose(2, 1, 0))


def test_to_diffusers_inverts_from_diffusers(peer):
    _, config, state = peer
    back = conv.vae_params_to_diffusers(conv.vae_params_from_diffusers(state, config), config)
    assert sorted(back) == sorted(state)
    for k in state:
        assert back[k].shape == state[k].shape and np.array_equal(back[k], state[k]), k


# ------------------------------------------------------------------------------------ files
def test_export_then_import_is_identity_and_diffusers_loads_it(peer, tmp_path):
    model, config, state = peer
    params = conv.vae_params_from_diffusers(state, config)
    out = str(tmp_path / "vae")
    conv.export_vae(config, params, out)
    assert sorted(os.listdir(out)) == ["config.json", conv.WEIGHTS_NAME]
    loaded_config, loaded = conv.load_vae(out)
    assert loaded_config == config
    assert_same_params(loaded, params)
    reloaded = diffusers.AutoencoderKLWan.from_pretrained(out).eval()
    assert dict(reloaded.config)["latents_std"] == list(config.latents_std)
    for k, v in state_dict_numpy(reloaded).items():
        assert np.array_equal(v, state[k]), k
    with pytest.raises(FileExistsError):
        conv.export_vae(config, params, out)
    conv.export_vae(config, params, out, overwrite=True)


def test_load_single_files_in_either_layout(peer, tmp_path):
    _, config, state = peer
    expected = conv.vae_params_from_diffusers(state, config)
    original = to_original(state, config.num_res_blocks)
    pth = str(tmp_path / "Wan2.1_VAE.pth")
    torch.save({k: torch.from_numpy(v) for k, v in original.items()}, pth)
    assert_same_params(conv.load_vae(pth, config)[1], expected)
    st = str(tmp_path / "vae.safetensors")
    io.write_safetensors(st, {f"vae.{k}": v for k, v in state.items()})  # wrapper prefix stripped
    assert_same_params(conv.load_vae(st, config)[1], expected)
    with pytest.raises(io.WeightFileError, match="mis-shaped keys"):
        conv.load_vae(pth)  # no config: the Wan 2.1 defaults, which the tiny weights do not fit


def test_load_pipeline_root_and_converted_dir(peer, tmp_path):
    model, config, state = peer
    model.save_pretrained(str(tmp_path / "pipe" / "vae"))
    loaded_config, params = conv.load_vae(str(tmp_path / "pipe"))
    assert loaded_config == config
    out = str(tmp_path / "converted")
    conv.save_vae(out, config, params, source="test")
    assert io.is_converted_dir(out)
    again_config, again = conv.load_vae(out)
    assert again_config == config
    assert_same_params(again, params)
    other = dict(config.to_dict(), base_dim=8)
    with pytest.raises(ValueError, match="differs from the stored"):
        conv.load_vae(out, WanVAEConfig.from_dict(other))
    io.save_converted(str(tmp_path / "dit"), "transformer", {}, {"w": np.zeros(2, np.float32)})
    with pytest.raises(io.WeightFileError, match="not a 'vae'"):
        conv.load_vae(str(tmp_path / "dit"))


# ------------------------------------------------------------------------------------ config
def test_config_round_trip_and_refusals(peer):
    model, config, _ = peer
    exported = conv.vae_config_to_diffusers(config)
    assert conv.vae_config_from_diffusers(json.loads(json.dumps(exported))) == config
    assert WanVAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    base = dict(model.config)
    for changes, message in [
        (dict(is_residual=True), "is_residual"), (dict(patch_size=2), "patch_size"),
        (dict(decoder_base_dim=8), "decoder_base_dim"), (dict(clip_output=True), r"\['clip_output'\]"),
        (dict(_class_name="AutoencoderKL"), "AutoencoderKL,"),
    ]:
        with pytest.raises(ValueError, match=message):
            conv.vae_config_from_diffusers(dict(base, **changes))
    with pytest.raises(ValueError, match="unknown WanVAEConfig keys"):
        WanVAEConfig.from_dict({"base_dim": 4, "zdim": 4})


def test_mismatched_state_dicts_name_the_keys(peer):
    _, config, state = peer
    bad = dict(state)
    del bad["decoder.conv_in.bias"]
    bad["encoder.conv_in.weight"] = bad["encoder.conv_in.weight"][:, :2]
    bad["encoder.extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(io.WeightFileError) as err:
        conv.vae_params_from_diffusers(bad, config)
    text = str(err.value)
    assert "decoder.conv_in.bias" in text and "encoder.extra.weight" in text
    assert "encoder.conv_in.weight: file (4, 2, 3, 3, 3) vs model (4, 3, 3, 3, 3)" in text
    original = to_original(state, config.num_res_blocks)
    del original["decoder.head.2.bias"]
    with pytest.raises(io.WeightFileError, match=r"decoder\.head\.2\.bias"):
        conv.vae_params_from_original(original, config)
    params = conv.vae_params_from_diffusers(state, config)
    params["quant_conv"]["kernel"] = np.zeros((1, 1, 1, 8, 7), np.float32)
    with pytest.raises(io.WeightFileError, match="quant_conv/kernel"):
        conv.vae_params_to_diffusers(params, config)
    with pytest.raises(io.WeightFileError, match="not a Wan VAE state dict"):
        conv._params_from_state({"foo.weight": np.zeros(1)}, config, "x.pth")


def test_converted_params_run(peer):
    """The loaded params drive the model (a smoke check; parity lives in tests/models)."""
    from camclone_jax.models.vae import WanVAE
    _, config, state = peer
    params = jax.tree_util.tree_map(np.asarray, conv.vae_params_from_diffusers(state, config))
    video = np.zeros((1, 1, 8, 8, 3), np.float32)
    latents = WanVAE(config).encode(params, video, chunked=False)
    assert latents.shape == (1, 1, 1, 1, 4) and np.all(np.isfinite(np.asarray(latents)))


def test_cli_detects_the_vae_and_applies_overrides(peer, tmp_path, capsys):
    from camclone_jax.convert.__main__ import main as convert_main

    model = peer[0]
    model.save_pretrained(tmp_path / "vae")
    assert convert_main(["import", "--src", str(tmp_path / "vae"), "--out", str(tmp_path / "ours"),
                         "--config_json", '{"tiling": true}']) == 0
    assert convert_main(["info", "--src", str(tmp_path / "ours")]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["kind"] == "vae" and info["config"]["tiling"] is True
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert convert_main(["export", "--src", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    reloaded = diffusers.AutoencoderKLWan.from_pretrained(tmp_path / "back")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
