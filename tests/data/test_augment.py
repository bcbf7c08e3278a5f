"""Camera-preserving augmentation (data/augment.py): exact on pixel-codec latents, the same
motion for the target and its camera reference, drawn per example, before the curriculum."""
import jax.numpy as jnp
import numpy as np
import pytest

from camclone_jax.data import pipeline, transforms
from camclone_jax.data.augment import Augment, AugmentStage
from camclone_jax.data.codec import PixelCodec
from camclone_jax.data.curriculum import Curriculum
from camclone_jax.training.data import augmentation, pipeline_config
from configs import clone_3d
from tests.data.conftest import CLIP

BOTH = dict(geometry=True, ref_colour=True)


def _moving(seed: int, step=(1, 2), frames=9, size=16) -> np.ndarray:
    """A random image translated by ``step`` pixels (dy, dx) per frame, wrapping: [F, H, W, 3]."""
    base = np.random.default_rng(seed).uniform(-1, 1, (size, size, 3)).astype(np.float32)
    return np.stack([np.roll(base, (k * step[0], k * step[1]), axis=(0, 1))
                     for k in range(frames)])  # [F, H, W, 3]


def _step_of(video: np.ndarray) -> tuple[int, int]:
    """The (dy, dx) per frame of a wrapping translation (the one that maps frame 0 to 1)."""
    n = video.shape[1]
    for dy in range(n):
        for dx in range(n):
            if np.array_equal(np.roll(video[0], (dy, dx), axis=(0, 1)), video[1]):
                return dy, dx
    raise AssertionError("not a translation")


def test_latent_augmentation_is_the_pixel_one_encoded():
    """On space-to-depth latents the stage gives exactly the latents of the augmented pixels,
    for every video of the triplet and the I2V latents; the first frame follows the target."""
    codec = PixelCodec(spatial_factor=4, temporal_factor=4, scale=2.0)
    enc = lambda v: np.asarray(codec.encode(jnp.asarray(v)[None]))[0]  # noqa: E731
    pixels = {"target": _moving(0), "camera_ref": _moving(1), "content_ref": _moving(2)}
    pixels["i2v_latents"] = np.concatenate([pixels["target"][:1],
                                            np.zeros_like(pixels["target"][1:])])
    latents = {k: enc(v) for k, v in pixels.items()}  # [3, 4, 4, 48]
    for index in range(12):
        a = AugmentStage(Augment(cell=4, **BOTH), seed=5)(
            index, dict(latents, first_frame=pixels["target"][0]))
        b = AugmentStage(Augment(**BOTH), seed=5)(
            index, dict(pixels, first_frame=pixels["target"][0]))
        for key in latents:
            np.testing.assert_array_equal(a[key], enc(b[key]), err_msg=key)
        np.testing.assert_array_equal(a["first_frame"], b["target"][0])


def test_the_reference_keeps_moving_like_the_target():
    """Whatever symmetry is drawn, target and camera reference (two scenes filmed by one
    camera) move alike afterwards; the draws give several cameras and several reference looks,
    the target keeps its colours, and the draw is a function of (seed, index)."""
    example = {"target": _moving(0), "camera_ref": _moving(1), "content_ref": _moving(2),
               "first_frame": _moving(0)[0]}
    stage = AugmentStage(Augment(**BOTH), seed=0)
    steps, looks = set(), set()
    for index in range(40):
        out = stage(index, example)
        assert _step_of(out["target"]) == _step_of(out["camera_ref"])
        steps.add(_step_of(out["target"]))
        np.testing.assert_array_equal(np.sort(out["target"].ravel()),
                                      np.sort(example["target"].ravel()))  # colours kept
        looks.add(tuple(np.round(out["camera_ref"].mean(axis=(0, 1, 2)), 4)))
        np.testing.assert_array_equal(stage(index, example)["camera_ref"], out["camera_ref"])
    assert len(steps) >= 6 and len(looks) >= 6, (steps, looks)


def test_uint8_references_invert_within_their_range():
    """uint8 pixels invert as 255 - x, never wrapping; the placeholder of a bad example passes."""
    video = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    stage = AugmentStage(Augment(ref_colour=True), seed=0)
    outs = [stage(i, {"target": video, "camera_ref": video})["camera_ref"] for i in range(16)]
    assert all(o.dtype == np.uint8 for o in outs)
    assert any(np.array_equal(o, 255 - video) for o in outs)
    assert stage(0, {"_skipped": 1}) == {"_skipped": 1}


def _cfg(**kw):
    clip = transforms.ClipConfig(**CLIP)
    return pipeline.PipelineConfig(clip=clip, batch_size=4, num_epochs=1, num_workers=0,
                                   process_index=0, process_count=1, **kw)


def test_pipeline_augments_before_the_curriculum(prepared_dir):
    """In the Grain pipeline: same-scene references are the augmented target itself; without
    the curriculum the references differ from the plain pipeline's while the order of examples
    stays; VAE latents are refused, naming why."""
    aug = Augment(**BOTH)
    copied = next(pipeline.make_loader(prepared_dir, _cfg(
        augment=aug, same_scene=Curriculum(1.0, 10, 4))))
    np.testing.assert_array_equal(copied["camera_ref"], copied["target"])
    plain = next(pipeline.make_loader(prepared_dir, _cfg()))
    augmented = next(pipeline.make_loader(prepared_dir, _cfg(augment=aug)))
    np.testing.assert_array_equal(plain["index"], augmented["index"])
    assert not np.array_equal(plain["camera_ref"], augmented["camera_ref"])
    with pytest.raises(ValueError, match="VAE latents"):
        pipeline.make_dataset(prepared_dir, pipeline.PipelineConfig(
            clip=transforms.ClipConfig(kind="latent", **CLIP), augment=aug, process_index=0,
            process_count=1))


def test_run_config_augments_training_only():
    """configs/clone_3d.py:aug augments its training loader with the codec's cells; held-out
    loaders never augment; an unknown augmentation is an error naming the known ones."""
    data = clone_3d.get_config("aug").data
    assert augmentation(data) == Augment(geometry=True, ref_colour=True, cell=8)
    assert pipeline_config(data, 16, 0).augment.active
    assert not pipeline_config(data, 16, 0, held_out=True).augment.active
    assert not pipeline_config(clone_3d.get_config().data, 16, 0).augment.active
    data.augment = dict(flips=True)
    with pytest.raises(ValueError, match="geometry and ref_colour"):
        augmentation(data)
