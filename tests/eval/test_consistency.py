"""View-consistency metrics: SIFT matched pixels and CLIP similarity plumbing."""
import numpy as np
import pytest

from camclone_jax.eval import consistency


def test_matched_pixels_prefers_the_same_scene(clips):
    pan, dolly = clips["pan"][0], clips["dolly"][0]
    same = consistency.matched_pixels(pan, pan, max_pairs=4)
    related = consistency.matched_pixels(pan, dolly, max_pairs=4)  # same location, other path
    noise = np.random.default_rng(0).integers(0, 256, pan.shape, dtype=np.uint8)
    unrelated = consistency.matched_pixels(pan, noise, max_pairs=4)
    assert same > related > unrelated
    assert same > 50 and unrelated < 10


def test_matched_pixels_bad_input():
    with pytest.raises(ValueError, match="generated frames must be uint8"):
        consistency.matched_pixels(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8, 3), np.uint8))


def test_clip_similarity_with_a_stand_in_embedder():
    """The averaging logic, with a deterministic unit-norm 'embedder' (no CLIP weights here)."""
    def embed(frames):
        f = frames.reshape(len(frames), -1).astype(np.float64) + 1.0
        return f / np.linalg.norm(f, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    assert consistency.clip_similarity(embed, a, a) == pytest.approx(100.0)
    assert consistency.clip_similarity(embed, a, 255 - a) < 90.0
    assert consistency.clip_similarity(embed, np.repeat(a[:1], 4, 0)) == pytest.approx(100.0)


def test_clip_weights_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="CLIP weights not found"):
        consistency.ClipEmbedder(str(tmp_path / "clip"))
    with pytest.raises(ValueError, match="need local CLIP vision weights"):
        consistency.ClipEmbedder(None)
