"""CLIP vision tower: parity with transformers, three weight layouts, preprocessing, errors."""

import re

import numpy as np
import pytest

from camclone_jax import utils
from camclone_jax.convert import encoders, io
from camclone_jax.models import clip

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            image_size=28, patch_size=7)


def random_clip(act: str, seed: int = 0):
    """A transformers CLIPVisionModel with every parameter random (norms included)."""
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY, hidden_act=act))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def hf_gelu(tmp_path_factory):
    model = random_clip("gelu")
    path = str(tmp_path_factory.mktemp("clip") / "image_encoder")
    model.save_pretrained(path)
    return model, path


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_parity_penultimate_layer(act, hf_gelu, tmp_path):
    if act == "gelu":
        model, path = hf_gelu
    else:
        model, path = random_clip(act, seed=1), str(tmp_path / "qg")
        model.save_pretrained(path)
    cfg, params = encoders.load_clip(path)
    assert cfg.activation == act and cfg.num_tokens == 17 and cfg.used_layers == 2
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == 4  # embeddings + 3 layers: [-2] is the output of block 2 of 3
    ours = np.asarray(clip.encode_images(cfg, params, pixels.permute(0, 2, 3, 1).numpy()))
    assert ours.shape == (2, 17, 32)
    assert np.abs(ours - hidden[-2].numpy()).max() <= 1e-4
    assert np.abs(ours - hidden[-1].numpy()).max() > 1e-2  # not the last layer


def to_wan(state: dict) -> dict:
    """transformers keys -> Wan's open-clip-xlm-roberta ViT-H .pth keys (fused q/k/v)."""
    out = {"textual.head.0.weight": np.zeros((2, 2), np.float32), "log_scale": np.zeros(()),
           "visual.head": np.zeros((32, 16), np.float32)}
    for key, v in state.items():
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)$", key)
        if m:
            i, rest = m.groups()
            if rest.startswith("self_attn.q_proj."):
                leaf = rest.rsplit(".", 1)[1]
                out[f"visual.transformer.{i}.attn.to_qkv.{leaf}"] = np.concatenate(
                    [state[f"encoder.layers.{i}.self_attn.{p}_proj.{leaf}"] for p in "qkv"])
                continue
            if rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                continue
            rest = (rest.replace("layer_norm1", "norm1").replace("layer_norm2", "norm2")
                    .replace("self_attn.out_proj", "attn.proj").replace("mlp.fc1", "mlp.0")
                    .replace("mlp.fc2", "mlp.2"))
            out[f"visual.transformer.{i}.{rest}"] = v
        elif key == "embeddings.class_embedding":
            out["visual.cls_embedding"] = v[None, None]
        elif key == "embeddings.position_embedding.weight":
            out["visual.pos_embedding"] = v[None]
        elif key == "embeddings.patch_embedding.weight":
            out["visual.patch_embedding.weight"] = v
        else:
            out[key.replace("pre_layrnorm", "visual.pre_norm")
                .replace("post_layernorm", "visual.post_norm")] = v
    return out


def to_open_clip(state: dict) -> dict:
    """transformers keys -> open_clip ``visual.*`` keys (in_proj fused q/k/v)."""
    out = {"token_embedding.weight": np.zeros((5, 4), np.float32),
           "visual.proj": np.zeros((32, 16), np.float32)}
    names = {"embeddings.class_embedding": "visual.class_embedding",
             "embeddings.position_embedding.weight": "visual.positional_embedding",
             "embeddings.patch_embedding.weight": "visual.conv1.weight"}
    for key, v in state.items():
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)$", key)
        if m:
            i, rest = m.groups()
            pre = f"visual.transformer.resblocks.{i}."
            if rest.startswith("self_attn.q_proj."):
                leaf = rest.rsplit(".", 1)[1]
                out[f"{pre}attn.in_proj_{leaf}"] = np.concatenate(
                    [state[f"encoder.layers.{i}.self_attn.{p}_proj.{leaf}"] for p in "qkv"])
            elif not rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                out[pre + rest.replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                    .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
                    .replace("self_attn.out_proj", "attn.out_proj")] = v
        else:
            out[names.get(key, key.replace("pre_layrnorm", "visual.ln_pre")
                          .replace("post_layernorm", "visual.ln_post"))] = v
    return out


@pytest.mark.parametrize("convert", [to_wan, to_open_clip])
def test_original_layouts_equal_transformers(convert, hf_gelu, tmp_path):
    model, path = hf_gelu
    cfg, params = encoders.load_clip(path)
    hf_state = {k.removeprefix("vision_model."): v.numpy()
                for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    file = str(tmp_path / "clip.pth")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in convert(hf_state).items()}, file)
    cfg2, params2 = encoders.load_clip(file, num_heads=4)
    assert cfg2 == cfg
    flat, flat2 = utils.flatten_params(params), utils.flatten_params(params2)
    assert set(flat) == set(flat2)
    for key in flat:
        np.testing.assert_array_equal(flat[key], flat2[key])
    # an unexpected key inside the vision tower is an error that names it
    bad = convert(hf_state)
    extra = ("visual.transformer.0.attn.extra" if convert is to_wan
             else "visual.transformer.resblocks.0.ls_1.gamma")
    bad[extra] = np.zeros(32, np.float32)
    io.write_safetensors(str(tmp_path / "bad.safetensors"), bad)
    with pytest.raises(io.WeightFileError, match=r"unknown keys.*(attn\.extra|ls_1\.gamma)"):
        encoders.load_clip(str(tmp_path / "bad.safetensors"), num_heads=4)


def test_converted_round_trip_and_errors(hf_gelu, tmp_path):
    _, path = hf_gelu
    cfg, params = encoders.load_clip(path)
    encoders.save_clip(str(tmp_path / "c"), cfg, params)
    cfg2, params2 = encoders.load_clip(str(tmp_path / "c"))
    assert cfg2 == cfg
    np.testing.assert_array_equal(params2["pos_embedding"], params["pos_embedding"])
    with pytest.raises(FileNotFoundError):
        encoders.load_clip(str(tmp_path / "nothing.pth"))
    with pytest.raises(ValueError, match=r"expected \(batch, 28, 28, 3\)"):
        clip.encode_images(cfg, params, np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="activation"):
        clip.CLIPVisionConfig(activation="relu")


def test_bicubic_equals_torch():
    img = np.random.default_rng(0).uniform(-1, 1, (2, 37, 53, 3)).astype(np.float32)
    for size in ((28, 28), (90, 61)):  # down and up
        ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(0, 3, 1, 2),
                                              size=size, mode="bicubic", align_corners=False)
        ours = clip.resize_bicubic(img, *size)
        assert np.abs(ours - ref.permute(0, 2, 3, 1).numpy()).max() <= 1e-5


def test_preprocess_modes():
    rng = np.random.default_rng(1)
    frame = rng.uniform(-1, 1, (1, 60, 100, 3)).astype(np.float32)  # Wan video range
    # Wan I2V: interpolate straight to 224x224, back to [0, 1], normalise
    ref = torch.nn.functional.interpolate(torch.from_numpy(frame).permute(0, 3, 1, 2),
                                          size=(224, 224), mode="bicubic", align_corners=False)
    ref = ref.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5
    ref = (ref - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)
    assert np.abs(clip.preprocess_images(frame, mode="wan") - ref).max() <= 1e-4
    # crop: shortest side to 224, centre crop; a uint8 image with a bright centre column
    img = np.zeros((50, 150, 3), np.uint8)
    img[:, 70:80] = 255
    out = clip.preprocess_images(img, mode="crop")
    assert out.shape == (1, 224, 224, 3)
    bright = np.nonzero(out[0, 112, :, 0] > 0)[0]  # source columns 70-80 of 150 -> ~90-134
    assert abs(bright.mean() - 111.5) <= 1 and 40 <= len(bright) <= 50
    with pytest.raises(ValueError, match="expected"):
        clip.preprocess_images(np.zeros((4, 4)))
