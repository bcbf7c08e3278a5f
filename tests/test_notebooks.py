"""The Colab notebooks run top to bottom: notebooks/train_demo.ipynb (the demo, shrunk by
CAMCLONE_NOTEBOOK_SMOKE=1) and notebooks/inference.ipynb (sampling its export), executed by
nbclient in a fresh python3 kernel; and they are committed without outputs."""

import os
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from camclone_jax.data.video import read_video  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 240  # seconds per cell; the smoke runs take well under a minute each
FRAMES, HEIGHT, WIDTH = 17, 16, 16  # the demo's clone world (a clip in pixels)
LABELLED = (FRAMES, 12 + 8 * HEIGHT, 4 * 8 * WIDTH, 3)  # 4 labelled panels, 8x upscaled


def kernel_env(**extra) -> dict:
    """The kernel's environment: this checkout importable, CPU, no fake test devices."""
    env = dict(os.environ)
    # conftest's 8 fake devices are for the sharding tests; its quicker CPU compiles apply
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["CAMCLONE_NOTEBOOK_SMOKE"] = "1"
    env.update(extra)
    return env


def execute(name: str, cwd: pathlib.Path, env: dict):
    """Runs every cell of notebooks/NAME in a new kernel started in cwd; returns the executed
    notebook (also written to cwd/NAME for inspection). A failing cell raises
    CellExecutionError with its traceback."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, cwd / name)
    print(f"{name}: {time.perf_counter() - start:.1f} s")
    return nb


def outputs(nb, output_type=None) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if output_type is None or o["output_type"] == output_type]


def embedded_videos(nb) -> int:
    return sum("data:video/mp4;base64," in o.get("data", {}).get("text/html", "")
               for o in outputs(nb, "display_data"))


def check_video(path, shape):
    assert os.path.isfile(path), path
    frames, _ = read_video(str(path))
    assert frames.shape == shape, (path, frames.shape)


def test_train_demo_then_inference_notebooks(tmp_path):
    """train_demo.ipynb, then inference.ipynb on its export (one test, so that a parallel
    run, pytest -n, does not train twice)."""
    workdir = tmp_path / "train" / "demo"
    (tmp_path / "train").mkdir()
    nb = execute("train_demo.ipynb", tmp_path / "train",
                 kernel_env(CAMCLONE_NOTEBOOK_WORKDIR=str(workdir)))
    assert not outputs(nb, "error")
    text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "already installed" in text  # the install cell is a no-op where the package imports
    assert "status: done | step: 4" in text and "camera gap by step" in text
    assert "camera cloning by the model just trained" in text  # the closing check
    assert "val_camera_gap" in text or any("image/png" in o.get("data", {})
                                           for o in outputs(nb, "display_data"))  # table or plot
    assert (workdir / "export" / "world.json").is_file()
    for task in ("i2v", "v2v"):  # camera | first frame or content | generated | ground truth
        check_video(workdir / f"sample_{task}.mp4", LABELLED)
        check_video(workdir / f"heldout_0_{task}.mp4", LABELLED)
    assert embedded_videos(nb) == 4  # the run's two samples and one more held-out path

    out_dir = tmp_path / "inference" / "outputs"
    (tmp_path / "inference").mkdir()
    nb = execute("inference.ipynb", tmp_path / "inference", kernel_env(
        CAMCLONE_NOTEBOOK_CHECKPOINT=str(workdir / "export"),
        CAMCLONE_NOTEBOOK_OUT_DIR=str(out_dir),
        CAMCLONE_NOTEBOOK_WORKDIR=str(tmp_path / "unused_demo")))
    assert not outputs(nb, "error")
    assert not (tmp_path / "unused_demo").exists()  # the given checkpoint was used, no training
    for task in ("i2v", "v2v"):
        check_video(out_dir / f"{task}.mp4", (FRAMES, HEIGHT, WIDTH, 3))
        # camera | first frame or content | generated | ground truth (synthetic references)
        check_video(out_dir / f"{task}_side_by_side.mp4", (FRAMES, HEIGHT, 4 * WIDTH, 3))
    # the move in words: its rendered reference (+ poses) | first frame | generated
    check_video(out_dir / "move_camera_ref.mp4", (FRAMES, HEIGHT, WIDTH, 3))
    assert (out_dir / "move_camera_ref.json").is_file()
    check_video(out_dir / "move_side_by_side.mp4", (FRAMES, HEIGHT, 3 * WIDTH, 3))
    # camera ref, content ref, I2V, V2V, the shipped tiny model's three held-out clips, the move
    assert embedded_videos(nb) == 8
    text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "shipped CamClone model   RotErr" in text and "static camera" in text
    for i in range(3):
        check_video(out_dir / f"tiny_clone_{i}.mp4", (17, 128, 4 * 128, 3))


@pytest.mark.parametrize("name", ["train_demo.ipynb", "inference.ipynb"])
def test_notebooks_are_committed_clean(name):
    """Valid nbformat 4, no outputs or execution counts, a python3 kernel."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
