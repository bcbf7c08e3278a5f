"""Prompt-embedding cache: CLI round trip, incremental re-runs, lookups and errors."""

import json
import os

import numpy as np
import pytest

from camclone_jax.convert import encoders
from camclone_jax.inference import prompts as ep
from camclone_jax.models import t5
from camclone_jax.models.tokenizer import load_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CORPUS = ["a camera orbits the red car", "the camera pans left over a city at night",
          "a dog runs on the beach", "slow dolly in towards a smiling woman"] * 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A random tiny UMT5EncoderModel directory and a tokenizer.json trained on the fly."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    cfg = transformers.UMT5Config(vocab_size=48, d_model=16, d_kv=4, num_heads=4, d_ff=24,
                                  num_layers=2, relative_attention_num_buckets=8,
                                  relative_attention_max_distance=16, dropout_rate=0.0)
    transformers.UMT5EncoderModel(cfg).eval().save_pretrained(str(root / "t5"))
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=40, unk_token="<unk>", special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    tok.save(str(root / "tokenizer.json"))
    return str(root / "t5"), str(root / "tokenizer.json")


# two compilations of one float32 computation differ in the last bits (see the first use)
FLOAT32_COMPILED = 1e-5


def _run(assets, prompts_file, out, *extra):
    t5_path, tok_path = assets
    return ep.main(["--t5", t5_path, "--tokenizer", tok_path, "--prompts", prompts_file,
                    "--out", out, "--max_length", "16", "--batch_size", "2", *extra])


def test_cli_round_trip_and_incremental(assets, tmp_path, capsys):
    prompts = ["a dog runs on the beach", "a camera orbits the red car", "a dog runs on the beach",
               "slow dolly in"]
    txt = tmp_path / "prompts.txt"
    txt.write_text("\n".join(prompts) + "\n\n", encoding="utf-8")
    out = str(tmp_path / "cache")
    assert _run(assets, str(txt), out) == 0
    assert "4 encoded, 0 already cached" in capsys.readouterr().out  # 3 unique + negative

    cache = ep.PromptCache(out)
    assert len(cache) == 4 and cache.negative_prompt == ep.WAN_NEGATIVE_PROMPT
    assert ep.WAN_NEGATIVE_PROMPT in cache and "slow dolly in" in cache
    cfg, params = encoders.load_t5(assets[0])
    tok = load_tokenizer(assets[1])
    unique = list(dict.fromkeys(prompts)) + [ep.WAN_NEGATIVE_PROMPT]
    want, lengths = t5.encode_prompts(unique, tok, cfg, params, max_length=16)
    got = cache.get_batch(unique)
    assert got.shape == (4, 16, 16) and got.dtype == np.float32
    # the CLI's encoder and this one are separately compiled float32 programs (here in one
    # process, in CI sometimes across processes): they agree to the last few bits, not exactly
    # (1.7e-6 seen on a fresh machine), so the bound is float32 rounding at this size, 1e-5
    np.testing.assert_allclose(got, want, atol=FLOAT32_COMPILED)
    for row, n in enumerate(lengths):
        assert cache.length(unique[row]) == n and not got[row, n:].any() and got[row, :n].any()

    # re-running skips everything; a new line costs one encoding; old files are untouched
    stamp = os.path.getmtime(os.path.join(out, cache.index["prompts"][ep.prompt_key(
        prompts[0])]["file"]))
    assert _run(assets, str(txt), out) == 0
    assert "0 encoded, 4 already cached" in capsys.readouterr().out
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in (
        {"caption": "a dog runs on the beach"}, "the camera pans left", {"prompt": "a dog"})),
        encoding="utf-8")
    assert _run(assets, str(jsonl), out) == 0
    assert "2 encoded, 2 already cached, 6 prompts" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out, "emb", ep.prompt_key(prompts[0]) + ".npy")) == stamp
    np.testing.assert_allclose(ep.PromptCache(out).get("a dog"),
                               t5.encode_prompts("a dog", tok, cfg, params, max_length=16)[0][0],
                               atol=FLOAT32_COMPILED)
    assert not [n for n in os.listdir(out) + os.listdir(os.path.join(out, "emb"))
                if n.endswith(".tmp")]  # nothing half-written


def test_lookups_and_errors(assets, tmp_path, capsys):
    txt = tmp_path / "p.txt"
    txt.write_text("a dog\n", encoding="utf-8")
    out = str(tmp_path / "cache")
    assert _run(assets, str(txt), out, "--negative_prompt", "") == 0
    cache = ep.PromptCache(out)
    assert cache.negative_prompt == "" and "" in cache and cache.length("") == 1  # EOS only
    with pytest.raises(KeyError, match="prompt not in the cache"):
        cache.get("a cat")
    # a cache built with one max_length refuses to grow with another
    t5_path, tok_path = assets
    assert ep.main(["--t5", t5_path, "--tokenizer", tok_path, "--prompts", str(txt), "--out", out,
                    "--max_length", "32"]) == 2
    assert "different max_length" in capsys.readouterr().err
    assert _run(assets, str(txt), str(tmp_path / "x"), "--t5", str(tmp_path / "none.pth")) == 2
    assert "no such weight file" in capsys.readouterr().err
    assert ep.main(["--t5", t5_path, "--tokenizer", str(tmp_path), "--prompts", str(txt),
                    "--out", str(tmp_path / "y")]) == 2
    assert "no tokenizer in" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "ok"}\n{"label": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: object has none of the fields"):
        ep.read_prompts(str(bad))
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        ep.read_prompts(str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="index.json"):
        ep.PromptCache(str(tmp_path / "nowhere"))
