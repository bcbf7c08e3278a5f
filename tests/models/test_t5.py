"""umT5 encoder: parity with transformers, weight import (both layouts), tokenizers, errors."""

import dataclasses
import json
import os
import re

import jax
import numpy as np
import pytest

from camclone_jax import utils
from camclone_jax.convert import encoders, io
from camclone_jax.models import t5
from camclone_jax.models.tokenizer import load_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 64
TINY = dict(vocab_size=VOCAB, d_model=32, d_kv=6, num_heads=4, d_ff=48, num_layers=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            dropout_rate=0.0, feed_forward_proj="gated-gelu")
CORPUS = ["a camera orbits the red car", "the camera pans left over a city at night",
          "a dog runs on the beach", "slow dolly in towards a smiling woman",
          "aerial shot of mountains and a river", "the car drives through the rain"] * 4


@pytest.fixture(scope="module")
def hf_model():
    """A transformers UMT5EncoderModel with every parameter random (norms included)."""
    torch.manual_seed(0)
    model = transformers.UMT5EncoderModel(transformers.UMT5Config(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("umt5") / "text_encoder")
    hf_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    """A tiny Unigram tokenizer.json trained in memory, T5-style: <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB - 4, unk_token="<unk>",
                                      special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    tok.save(path)
    return path


def _ids_mask(lengths, length, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (len(lengths), length)).astype(np.int64)
    mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    return np.where(mask, ids, 0), mask


def _hf_run(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids),
                     attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


# ------------------------------------------------------------------------------ the model
def test_buckets_match_transformers():
    for buckets, dist, length in ((32, 128, 300), (8, 16, 40)):
        cfg = transformers.UMT5Config(num_layers=1, d_model=8, d_kv=2, num_heads=4, d_ff=8,
                                      vocab_size=8, relative_attention_num_buckets=buckets,
                                      relative_attention_max_distance=dist)
        attn = transformers.UMT5EncoderModel(cfg).encoder.block[0].layer[0].SelfAttention
        pos = torch.arange(length)
        ref = attn._relative_position_bucket(pos[None] - pos[:, None]).numpy()
        np.testing.assert_array_equal(t5.relative_position_buckets(length, buckets, dist), ref)


def test_parity_with_padding_and_lengths(hf_model, hf_dir):
    cfg, params = encoders.load_t5(hf_dir)
    assert cfg.num_layers == 2 and cfg.num_buckets == 8 and cfg.max_distance == 16
    lengths = [40, 17, 3]  # 40 > max_distance: the log buckets are exercised
    ids, mask = _ids_mask(lengths, 40)
    ref = _hf_run(hf_model, ids, mask)
    full = np.asarray(t5.UMT5Encoder(cfg).apply({"params": params}, ids, mask))
    assert np.abs(full - ref).max() <= 1e-4  # every row, padded queries included
    unrolled = dataclasses.replace(cfg, scan_layers=False)
    out = np.asarray(t5.encode_ids(unrolled, params, ids, mask))
    for row, n in enumerate(lengths):
        assert np.abs(out[row, :n] - ref[row, :n]).max() <= 1e-4
        assert not out[row, n:].any()  # zero past each prompt's length
    # the relative bias is per layer: zeroing layer 1's table changes the output
    params2 = jax.tree_util.tree_map(np.array, params)
    params2["blocks"]["pos_embedding"][1] = 0
    assert np.abs(np.asarray(t5.encode_ids(cfg, params2, ids, mask)) - out).max() > 1e-3


def test_bfloat16_close_to_float32(hf_dir):
    cfg, params = encoders.load_t5(hf_dir)
    ids, mask = _ids_mask([12, 5], 12, seed=1)
    ref = np.asarray(t5.encode_ids(cfg, params, ids, mask))
    bf, bf_params = encoders.load_t5(hf_dir, dtype="bfloat16", param_dtype="bfloat16")
    assert bf_params["blocks"]["ffn"]["fc2"]["kernel"].dtype.name == "bfloat16"
    out = np.asarray(t5.encode_ids(bf, bf_params, ids, mask))
    assert out.dtype.name == "bfloat16"
    out = out.astype(np.float32)
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() <= 0.1 * np.abs(ref).max()


# ------------------------------------------------------------------------------ weights
def to_wan_layout(state: dict) -> dict:
    """transformers UMT5EncoderModel keys renamed to models_t5_umt5-xxl-enc-bf16.pth keys."""
    renames = [(r"^shared\.weight$", "token_embedding.weight"),
               (r"^encoder\.final_layer_norm\.", "norm."),
               (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
                r"blocks.\1.pos_embedding.embedding."),
               (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"blocks.\1.attn."),
               (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
               (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
               (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
               (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
               (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2.")]
    out = {}
    for key, value in state.items():
        if key == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def test_wan_layout_import_equals_transformers(hf_model, hf_dir, tmp_path):
    cfg, params = encoders.load_t5(hf_dir)
    state = {k: v.clone() for k, v in to_wan_layout(hf_model.state_dict()).items()}
    assert "blocks.1.pos_embedding.embedding.weight" in state and "norm.weight" in state
    path = str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(state, path)
    cfg2, params2 = encoders.load_t5(path, max_distance=16)
    assert cfg2 == cfg
    flat, flat2 = utils.flatten_params(params), utils.flatten_params(params2)
    assert set(flat) == set(flat2)
    for key in flat:
        np.testing.assert_array_equal(flat[key], flat2[key])


def test_converted_dir_round_trip(hf_dir, tmp_path):
    cfg, params = encoders.load_t5(hf_dir)
    out = str(tmp_path / "t5")
    encoders.save_t5(out, cfg, params)
    cfg2, params2 = encoders.load_t5(out, dtype="bfloat16")
    assert cfg2 == dataclasses.replace(cfg, dtype="bfloat16")
    np.testing.assert_array_equal(params2["blocks"]["attn"]["q"]["kernel"],
                                  params["blocks"]["attn"]["q"]["kernel"])
    io.save_converted(str(tmp_path / "other"), "vae", {}, {"x": np.zeros(2)})
    with pytest.raises(io.WeightFileError, match="not 't5'"):
        encoders.load_t5(str(tmp_path / "other"))


def test_export_round_trips(hf_model, hf_dir, tmp_path):
    cfg, params = encoders.load_t5(hf_dir)
    out = str(tmp_path / "exported")
    encoders.export_t5(cfg, params, out)
    again = transformers.UMT5EncoderModel.from_pretrained(out).eval()
    ids, mask = _ids_mask([20, 7], 20, seed=2)
    np.testing.assert_array_equal(_hf_run(again, ids, mask), _hf_run(hf_model, ids, mask))
    encoders.export_t5(cfg, params, str(tmp_path / "wan.safetensors"), fmt="original")
    _, params2 = encoders.load_t5(str(tmp_path / "wan.safetensors"), max_distance=16)
    np.testing.assert_array_equal(params2["blocks"]["ffn"]["gate"]["kernel"],
                                  params["blocks"]["ffn"]["gate"]["kernel"])
    with pytest.raises(FileExistsError):
        encoders.export_t5(cfg, params, out)
    # a full encoder-decoder checkpoint: decoder and LM head are dropped, the encoder imported
    state = encoders.t5_params_to_torch(params, cfg)
    state.update({"decoder.block.0.layer.0.SelfAttention.q.weight": np.zeros((24, 32), np.float32),
                  "lm_head.weight": np.zeros((VOCAB, 32), np.float32)})
    del state["encoder.embed_tokens.weight"]
    io.write_safetensors(str(tmp_path / "full.safetensors"), state)
    _, params3 = encoders.load_t5(str(tmp_path / "full.safetensors"), max_distance=16)
    np.testing.assert_array_equal(params3["token_embedding"]["embedding"],
                                  params["token_embedding"]["embedding"])


def test_bad_weights_are_named(hf_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        encoders.load_t5(str(tmp_path / "missing.pth"))
    state = {k: v.numpy() for k, v in to_wan_layout(hf_model.state_dict()).items()}
    state["blocks.0.attn.q.weight"] = state["blocks.0.attn.q.weight"][:, :5]
    state["blocks.0.attn.extra.weight"] = np.zeros(3, np.float32)
    del state["blocks.1.norm2.weight"]
    path = str(tmp_path / "bad.safetensors")
    io.write_safetensors(path, state)
    with pytest.raises(io.WeightFileError) as err:
        encoders.load_t5(path, max_distance=16)
    msg = str(err.value)
    for key in ("blocks.0.attn.q.weight", "blocks.0.attn.extra.weight", "blocks.1.norm2.weight"):
        assert key in msg
    with pytest.raises(ValueError, match="feed_forward_proj"):
        t5.T5Config.from_transformers({**TINY, "feed_forward_proj": "relu"})


# ---------------------------------------------------------------------------- tokenizers
def test_tokenizer_json_matches_transformers(tokenizer_json):
    tok = load_tokenizer(os.path.dirname(tokenizer_json))
    assert (tok.pad_id, tok.eos_id) == (0, 1) and tok.vocab_size <= VOCAB
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, pad_token="<pad>",
                                               eos_token="</s>", unk_token="<unk>")
    texts = ["a camera orbits the red car", "a dog", CORPUS[1] + " " + CORPUS[4]]
    for max_length in (32, 8):  # 8 truncates the long prompts
        ids, mask = tok(texts, max_length=max_length)
        want = ref(texts, padding="max_length", truncation=True, max_length=max_length)
        np.testing.assert_array_equal(ids, np.asarray(want["input_ids"]))
        np.testing.assert_array_equal(mask, np.asarray(want["attention_mask"]))
        lengths = mask.sum(1)
        assert (ids[np.arange(3), lengths - 1] == 1).all()  # every row ends with EOS
    # Wan's cleaning: whitespace runs collapse, HTML entities unescape
    np.testing.assert_array_equal(tok("a  dog\n&amp;", 16)[0], tok("a dog &", 16)[0])


def test_sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    path = str(tmp_path / "spiece.model")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=path[:-6],
                                   vocab_size=40, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    tok = load_tokenizer(str(tmp_path))
    raw = spm.SentencePieceProcessor(model_file=path).encode(CORPUS[0])
    ids, mask = tok([CORPUS[0], "dog"], max_length=24)
    np.testing.assert_array_equal(ids[0, :len(raw) + 1], raw + [1])
    assert mask[0].sum() == len(raw) + 1 and not ids[0, len(raw) + 1:].any()
    short, _ = tok([CORPUS[0]], max_length=3)
    np.testing.assert_array_equal(short[0], raw[:2] + [1])


def test_missing_tokenizer_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(str(tmp_path / "nope.json"))
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown tokenizer file type"):
        load_tokenizer(str(tmp_path / "vocab.txt"))


def test_encode_prompts_like_wan(hf_model, hf_dir, tokenizer_json):
    cfg, params = encoders.load_t5(hf_dir)
    tok = load_tokenizer(tokenizer_json)
    prompts = ["a camera orbits the red car", "a dog", "slow dolly in towards a smiling woman"]
    emb, lengths = t5.encode_prompts(prompts, tok, cfg, params, max_length=24, batch_size=2)
    assert emb.shape == (3, 24, cfg.dim) and lengths.dtype == np.int32
    ids, mask = tok(prompts, max_length=24)
    np.testing.assert_array_equal(lengths, mask.sum(1))
    ref = _hf_run(hf_model, ids.astype(np.int64), mask.astype(np.int64))
    for row, n in enumerate(lengths):
        assert np.abs(emb[row, :n] - ref[row, :n]).max() <= 1e-4
        assert not emb[row, n:].any()
    with pytest.raises(ValueError, match="at least one prompt"):
        t5.encode_prompts([], tok, cfg, params)


def test_sharded_params_give_the_same_embeddings(hf_dir):
    from camclone_jax import sharding

    cfg, params = encoders.load_t5(hf_dir)
    specs = t5.t5_logical_specs(cfg)
    assert tuple(specs["blocks"]["attn"]["q"]["kernel"]) == ("layers", "embed", "heads")
    mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})  # the 8 fake CPU devices of conftest
    sharded = jax.device_put(params, sharding.logical_sharding(specs, mesh))
    assert tuple(sharded["blocks"]["ffn"]["gate"]["kernel"].sharding.spec) == (None, "fsdp", "tensor")
    ids, mask = _ids_mask([16, 9], 16, seed=3)
    ref = np.asarray(t5.encode_ids(cfg, params, ids, mask))
    assert np.abs(np.asarray(t5.encode_ids(cfg, sharded, ids, mask)) - ref).max() <= 1e-5


def test_cli_detects_t5_and_clip_and_refuses_clip_export(hf_model, hf_dir, tmp_path, capsys):
    from camclone_jax.convert.__main__ import main as convert_main
    from tests.models.test_clip import random_clip

    assert convert_main(["import", "--src", str(hf_dir), "--out", str(tmp_path / "t5")]) == 0
    assert convert_main(["info", "--src", str(tmp_path / "t5")]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["kind"] == "t5"
    assert info["params"] == sum(p.numel() for p in hf_model.parameters())  # tied embedding once
    assert convert_main(["export", "--src", str(tmp_path / "t5"), "--out", str(tmp_path / "back")]) == 0
    reloaded = transformers.UMT5EncoderModel.from_pretrained(tmp_path / "back")
    for name, value in hf_model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name]), name

    random_clip("gelu").save_pretrained(tmp_path / "clip_hf")
    assert convert_main(["import", "--src", str(tmp_path / "clip_hf"), "--out", str(tmp_path / "clip")]) == 0
    assert convert_main(["export", "--src", str(tmp_path / "clip"), "--out", str(tmp_path / "x")]) == 2
    assert "export is not supported for kind 'clip'" in capsys.readouterr().err
