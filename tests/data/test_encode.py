"""Latent pre-encoding with a tiny random VAE on the 8 fake CPU devices."""
import json
import os

import jax
import numpy as np
import pytest

from camclone_jax.convert.vae import save_vae
from camclone_jax.data import encode, pipeline, records, transforms
from camclone_jax.models.vae import WanVAE, WanVAEConfig
from tests.data.conftest import CLIP
from tests.models.test_t5 import TINY, tokenizer_json  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    cfg = WanVAEConfig(base_dim=4, z_dim=4, latents_mean=[0.1] * 4, latents_std=[2.0] * 4)
    params = WanVAE(cfg).init_params(jax.random.key(0))
    path = str(tmp_path_factory.mktemp("vae") / "tiny_vae")
    save_vae(path, cfg, params)
    return path, cfg, params


def test_encode_job_writes_latent_records_the_pipeline_reads(prepared_dir, tiny_vae, tmp_path):
    vae_path, vae_cfg, params = tiny_vae
    src = list(records.read_records(os.path.join(prepared_dir, "triplets-00000-of-00003.array_record")))
    records.write_records(str(tmp_path / "in" / "a-0.array_record"), src[:3] + [b"garbage"])
    records.write_records(str(tmp_path / "in" / "a-1.array_record"), src[3:5])
    clip = transforms.ClipConfig(**CLIP)
    out = str(tmp_path / "out")
    # host 0 of 2 takes file 0 only; host 1 then takes file 1
    m0 = encode.encode_records(str(tmp_path / "in"), vae_path, out, clip, batch_size=2, i2v=True,
                               dtype="float32", process_index=0, process_count=2)
    assert list(m0) == ["a-0.array_record"] and not os.path.exists(os.path.join(out, "a-1.array_record"))
    assert m0["a-0.array_record"]["written"] == 3
    assert m0["a-0.array_record"]["bad"][0]["record"] == 3
    assert "corrupt" in m0["a-0.array_record"]["bad"][0]["reason"]
    encode.encode_records(str(tmp_path / "in"), vae_path, out, clip, batch_size=2, i2v=True,
                          dtype="float32", process_index=1, process_count=2)
    mtime = os.path.getmtime(os.path.join(out, "a-0.array_record"))
    again = encode.encode_records(str(tmp_path / "in"), vae_path, out, clip, batch_size=2,
                                  i2v=True, dtype="float32", process_index=0, process_count=1)
    assert sorted(again) == ["a-0.array_record", "a-1.array_record"]  # both done: nothing redone
    assert os.path.getmtime(os.path.join(out, "a-0.array_record")) == mtime

    # the stored latents are the VAE's encoding of the pipeline's clips
    rec_in = records.decode_triplet(src[4])
    rec_out = records.decode_triplet(list(records.read_records(os.path.join(out, "a-1.array_record")))[1])
    assert rec_out["kind"] == "latent" and rec_out["caption"] == rec_in["caption"]
    assert json.loads(rec_out["latent_info"]["vae"]) == vae_cfg.to_dict()
    vae = WanVAE(vae_cfg)
    for key in records.VIDEO_KEYS:
        clip_px = transforms.to_float(transforms.load_clip(rec_in[key]["video"], clip))  # [F, H, W, 3]
        want = np.asarray(vae.encode(params, clip_px[None]))[0]  # [L, h, w, C]
        assert rec_out[key]["latents"].shape == (2, 2, 3, 4)
        np.testing.assert_allclose(rec_out[key]["latents"], want, atol=1e-4, rtol=1e-4)
    assert rec_out["i2v_latents"].shape == (2, 2, 3, 4)

    cfg = pipeline.PipelineConfig(clip=transforms.ClipConfig(**CLIP, kind="latent"), batch_size=5,
                                  num_epochs=1, num_workers=0, process_index=0, process_count=1)
    batch = next(pipeline.make_loader(out, cfg))
    assert batch["target"].shape == (5, 2, 2, 3, 4) and batch["i2v_latents"].shape == (5, 2, 2, 3, 4)
    assert batch["first_frame"].shape == (5, 16, 24, 3)


def test_encode_rejects_frame_counts_the_vae_cannot_take(prepared_dir, tiny_vae, tmp_path):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        encode.encode_records(prepared_dir, tiny_vae[0], str(tmp_path),
                              transforms.ClipConfig(num_frames=6, height=16, width=24))


def test_encode_job_stores_caption_embeddings(prepared_dir, tiny_vae, tokenizer_json, tmp_path):
    from camclone_jax.convert.encoders import save_t5
    from camclone_jax.models import t5
    from camclone_jax.models.tokenizer import load_tokenizer

    t5_cfg = t5.T5Config.from_transformers(TINY)
    t5_params = t5.init_t5_params(t5_cfg, 0)
    save_t5(str(tmp_path / "t5"), t5_cfg, t5_params)
    src = list(records.read_records(os.path.join(prepared_dir, "triplets-00000-of-00003.array_record")))
    records.write_records(str(tmp_path / "in" / "a.array_record"), src[:2])
    clip = transforms.ClipConfig(**CLIP)
    with pytest.raises(ValueError, match="needs both --t5 and --tokenizer"):
        encode.encode_records(str(tmp_path / "in"), tiny_vae[0], str(tmp_path / "x"), clip,
                              t5_path=str(tmp_path / "t5"))
    encode.encode_records(str(tmp_path / "in"), tiny_vae[0], str(tmp_path / "out"), clip,
                          batch_size=2, dtype="float32", t5_path=str(tmp_path / "t5"),
                          tokenizer_path=tokenizer_json)
    out = [records.decode_triplet(r) for r in records.read_records(str(tmp_path / "out" / "a.array_record"))]
    want, lengths = t5.encode_prompts([r["caption"] for r in out], load_tokenizer(tokenizer_json),
                                      t5_cfg, t5_params)
    for rec, w, n in zip(out, want, lengths):
        assert rec["text_embedding"].shape == (n, t5_cfg.dim) and rec["text_encoder"].startswith("umt5:")
        np.testing.assert_allclose(rec["text_embedding"], w[:n], atol=1e-5)


def test_clip_cache_decodes_each_video_once_within_its_budget(synthetic_dir, monkeypatch):
    """A generated video recurs in many triplets: the pre-encoder decodes it once (an ffmpeg
    process per decode) and evicts the least recently used clips beyond its byte budget."""
    calls = []
    real = transforms.load_clip
    monkeypatch.setattr(transforms, "load_clip", lambda b, c: calls.append(1) or real(b, c))
    clip_cfg = transforms.ClipConfig(**CLIP)
    cache = encode.ClipCache(clip_cfg)
    rec = records.decode_triplet(next(iter(records.read_records(
        pipeline.record_files(os.path.join(synthetic_dir, "records"))[0]))))
    videos = [rec[k]["video"] for k in records.VIDEO_KEYS]
    first = [cache(v) for v in videos]
    again = [cache(v) for v in videos]
    assert len(calls) == 3 and all(a is b for a, b in zip(first, again))
    np.testing.assert_array_equal(first[0], real(videos[0], clip_cfg))
    assert not first[0].flags.writeable
    small = encode.ClipCache(clip_cfg, max_bytes=first[0].nbytes)
    for v in videos + videos[:1]:
        small(v)
    assert len(calls) == 3 + 4 and small.size == first[0].nbytes  # evicted, then decoded again
