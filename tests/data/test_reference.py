"""Reference videos and images: frame choice (uniform, fps-aware, loop, pad), fit, errors."""

import os

import imageio.v2 as imageio
import numpy as np
import pytest

from camclone_jax.data import reference, video

LEVELS = 8 + 14 * np.arange(17)  # frame k of the test video is flat grey LEVELS[k]


def _grey_video(n, h, w):
    return np.broadcast_to(LEVELS[:n, None, None, None], (n, h, w, 3)).astype(np.uint8).copy()


def _frame_ids(frames):
    """Which source frame each decoded (flat grey) frame is."""
    means = frames.reshape(len(frames), -1, 3)[:, :, 1].mean(1)
    return np.round((means - 8) / 14).astype(int).tolist()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    paths = {"landscape": str(root / "land_25fps.mp4"), "portrait": str(root / "portrait.mp4"),
             "image": str(root / "first.png"), "corrupt": str(root / "corrupt.mp4"),
             "text": str(root / "notes.mp4"), "mkv": str(root / "land.mkv")}
    video.write_mp4(paths["landscape"], _grey_video(17, 360, 640), fps=25)
    video.write_mp4(paths["portrait"], _grey_video(9, 64, 36), fps=16)
    imageio.imwrite(paths["image"], np.full((90, 160, 3), 200, np.uint8))
    with open(paths["landscape"], "rb") as f:
        data = f.read()
    with open(paths["corrupt"], "wb") as f:
        f.write(data[:len(data) // 3])
    with open(paths["text"], "w") as f:
        f.write("not a video\n")
    _, err, code = video._ffmpeg(["-loglevel", "error", "-i", paths["landscape"], "-c", "copy",
                                  paths["mkv"]])
    assert code == 0, err
    return paths


def test_frame_index_rules():
    np.testing.assert_array_equal(reference.frame_indices(17, 5), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(reference.frame_indices(100, 3), [0, 50, 99])
    got = reference.frame_indices(17, 9, sampling="fps", src_fps=25, fps=16)
    np.testing.assert_array_equal(got, [0, 1, 3, 4, 6, 7, 9, 10, 12])  # floor(k * 25 / 16)
    np.testing.assert_array_equal(reference.frame_indices(40, 4, sampling="fps", src_fps=8, fps=16),
                                  [0, 0, 1, 1])  # a slower source repeats frames (real speed)
    with pytest.raises(reference.ReferenceError, match=r"too short.*5 frames.*--short loop"):
        reference.frame_indices(5, 9)
    np.testing.assert_array_equal(reference.frame_indices(3, 7, short="loop"),
                                  [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(reference.frame_indices(3, 5, short="pad"), [0, 1, 2, 2, 2])
    with pytest.raises(reference.ReferenceError, match=r"fps sampling needs 1\.00 s"):
        reference.frame_indices(10, 17, sampling="fps", src_fps=10, fps=16)
    np.testing.assert_array_equal(
        reference.frame_indices(10, 5, sampling="fps", src_fps=20, fps=4, short="loop"),
        [0, 5, 0, 5, 0])
    with pytest.raises(ValueError, match="unknown sampling"):
        reference.frame_indices(10, 5, sampling="random")
    with pytest.raises(ValueError, match="unknown short"):
        reference.frame_indices(10, 5, short="repeat")


def test_uniform_and_fps_aware_decoding(files):
    clip = reference.load_reference_video(files["landscape"], 5, 32, 48)
    assert clip.shape == (5, 32, 48, 3) and clip.dtype == np.uint8
    assert _frame_ids(clip) == [0, 4, 8, 12, 16]
    clip = reference.load_reference_video(files["landscape"], 9, 32, 48, sampling="fps", fps=16)
    assert _frame_ids(clip) == [0, 1, 3, 4, 6, 7, 9, 10, 12]  # floor(k * 25 / 16)
    clip = reference.load_reference_video(files["mkv"], 5, 32, 48)  # another container
    assert _frame_ids(clip) == [0, 4, 8, 12, 16]


def test_short_reference_needs_a_flag(files):
    with pytest.raises(reference.ReferenceError, match=r"too short: it has 17 frames.*--short"):
        reference.load_reference_video(files["landscape"], 21, 32, 48)
    with pytest.raises(reference.ReferenceError, match="too short"):
        reference.load_reference_video(files["landscape"], 17, 32, 48, sampling="fps", fps=16)
    looped = reference.load_reference_video(files["landscape"], 21, 32, 48, short="loop")
    assert _frame_ids(looped) == list(range(17)) + [0, 1, 2, 3]
    padded = reference.load_reference_video(files["landscape"], 17, 32, 48, sampling="fps",
                                            fps=16, short="pad")
    assert _frame_ids(padded)[-3:] == [16, 16, 16] and _frame_ids(padded)[:3] == [0, 1, 3]


def test_aspect_ratio_rules(files):
    # 640x360 -> 48x32 crops 16% of the width: fine by default
    assert reference.load_reference_video(files["landscape"], 5, 32, 48).shape == (5, 32, 48, 3)
    # a portrait video for a landscape clip would lose 62% of its height
    with pytest.raises(reference.ReferenceError,
                       match=r"36x64 .*aspect 0\.56.*discard 62% of its height.*fit='pad'"):
        reference.load_reference_video(files["portrait"], 5, 32, 48)
    padded = reference.load_reference_video(files["portrait"], 5, 32, 48, fit="pad")
    assert padded.shape == (5, 32, 48, 3)
    assert padded[:, :, :8].max() == 0 and padded[:, :, -8:].max() == 0  # black pillars
    assert _frame_ids(padded[:, :, 20:28]) == [0, 2, 4, 6, 8]
    stretched = reference.load_reference_video(files["portrait"], 5, 32, 48, fit="stretch")
    assert stretched.shape == (5, 32, 48, 3) and stretched[:, :, :4].min() > 0
    cropped = reference.load_reference_video(files["portrait"], 5, 32, 48, max_crop=0.9)
    assert cropped.shape == (5, 32, 48, 3)
    image = reference.load_image(files["image"], 32, 48)
    assert image.shape == (32, 48, 3) and abs(int(image.mean()) - 200) <= 1


def test_clear_errors_for_unusable_files(files, tmp_path):
    with pytest.raises(FileNotFoundError, match="camera reference not found"):
        reference.load_reference_video(str(tmp_path / "missing.mp4"), 5, 32, 48,
                                       what="camera reference")
    with pytest.raises(reference.ReferenceError, match="still image .*expected a video"):
        reference.load_reference_video(files["image"], 5, 32, 48)
    with pytest.raises(reference.ReferenceError, match="is a video .*expected a still image"):
        reference.load_image(files["landscape"], 32, 48)
    for name in ("corrupt", "text"):
        with pytest.raises(reference.ReferenceError, match="cannot (read|decode)|truncated"):
            reference.load_reference_video(files[name], 5, 32, 48)
    with pytest.raises(reference.ReferenceError, match="is a directory"):
        reference.load_reference_video(str(tmp_path), 5, 32, 48)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".mp4")]


def test_a_truncated_mp4_gets_one_verdict_from_every_reader(files, tmp_path):
    """The training side (video.read_video, data.prepare) and sampling (probe_video) both call
    a cut-off file truncated, and --short loop does not paper over it."""
    cut = str(tmp_path / "cut.mp4")
    video.write_mp4(cut, np.random.default_rng(0).integers(0, 255, (33, 64, 96, 3), np.uint8),
                    fps=16)
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 3])
    with pytest.raises(ValueError, match=f"{cut} is truncated or corrupt"):
        video.read_video(cut)
    for short in ("error", "loop"):
        with pytest.raises(reference.ReferenceError, match=f"{cut} is truncated or corrupt"):
            reference.load_reference_video(cut, 5, 32, 48, short=short)


def test_arrays(files):
    frames = _grey_video(9, 32, 48)
    got = reference.load_reference_video(frames, 5, 32, 48)
    np.testing.assert_array_equal(got, frames[[0, 2, 4, 6, 8]])
    got = reference.load_reference_video(frames, 5, 32, 48, sampling="fps", fps=16)
    np.testing.assert_array_equal(got, frames[:5])
    with pytest.raises(reference.ReferenceError, match="the clip is 48x32; resize it first"):
        reference.load_reference_video(_grey_video(9, 40, 48), 5, 32, 48)
    with pytest.raises(reference.ReferenceError, match="dtype float32, expected uint8"):
        reference.load_image(np.zeros((32, 48, 3), np.float32), 32, 48)
    with pytest.raises(reference.ReferenceError, match=r"expected \[height, width, 3\]"):
        reference.load_image(np.zeros((1, 32, 48, 3), np.uint8), 32, 48)
