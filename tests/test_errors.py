"""Every command's user errors end in one line, ``error: ...`` naming the file or flag, exit
status 2, never a traceback (camclone_jax/errors.py).

Each command's error cases run through its real command line: in this process through its
``main(argv)`` (cheap: one jax import for all), and a handful as true subprocesses of
``python -m camclone_jax.X``, which prove the exit status and the traceback rule end to end
(absl's flag parsing, the orbax write that fails, evaluate stopped by Ctrl-C). A new command
or flag gets its cases here."""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from camclone_jax import distributed, errors, evaluate
from camclone_jax.convert.__main__ import main as convert_main
from camclone_jax.data import prepare, video
from camclone_jax.data import encode as encode_lib
from camclone_jax.data.synthetic.__main__ import main as synthetic_main
from camclone_jax.inference import cli as sample_cli
from camclone_jax.inference import prompts
from camclone_jax.training import checkpoint as ckpt_lib
from camclone_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, "camclone_jax", "assets")
EXAMPLES = os.path.join(ASSETS, "examples")
TINY = os.path.join(ASSETS, "models", "clone_tiny")
CAM, IMAGE = os.path.join(EXAMPLES, "camera_ref.mp4"), os.path.join(EXAMPLES, "first_frame.png")
UNWRITABLE = "/sys/camclone_out"  # sysfs refuses new files, also to root (chmod does not)


def run_main(main, argv):
    """(exit status, stderr) of a command's ``main(argv)`` in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
    return status if isinstance(status, int) else 0, err.getvalue()


def check_cases(main, cases):
    """Runs (argv, wanted text) cases; asserts each is status 2 with one error line holding
    the wanted text and no traceback (all failures reported at once)."""
    bad = []
    for argv, want in cases:
        status, err = run_main(main, argv)
        lines = err.strip().splitlines()
        last = lines[-1] if lines else ""
        if status != 2 or "Traceback" in err or "error: " not in last or want not in last:
            bad.append(f"{argv}: status {status}, stderr ...{err[-600:]!r} (wanted {want!r})")
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Hostile input files and paths shared by the commands' cases."""
    d = tmp_path_factory.mktemp("hostile")
    f = {"dir": str(d), "a_file": str(d / "a_file"), "folder.mp4": str(d / "folder.mp4")}
    open(f["a_file"], "w").close()
    os.makedirs(f["folder.mp4"])
    jobs = {  # name -> CSV text
        "ragged": f"camera_ref,image,prompt,out\n{CAM},{IMAGE},a,{d}/1.mp4\n"
                  f"{CAM},{IMAGE},a, b,{d}/2.mp4\n",
        "headerless": f"{CAM},{IMAGE},a,{d}/1.mp4\n",
        "twice": f"camera_ref,image,out\n{CAM},{IMAGE},{d}/same.mp4\n{CAM},{IMAGE},{d}/x.mp4\n"
                 f"{CAM},{IMAGE},{d}/same.mp4\n",
        "steps": f"camera_ref,image,out,steps\n{CAM},{IMAGE},{d}/1.mp4,2\n"
                 f"{CAM},{IMAGE},{d}/2.mp4,abc\n",
        "frames": f"camera_ref,image,out,frames\n{CAM},{IMAGE},{d}/1.mp4,-5\n",
        "unwritable": f"camera_ref,image,out\n{CAM},{IMAGE},{UNWRITABLE}/1.mp4\n",
    }
    for name, text in jobs.items():
        f[name] = str(d / f"{name}.csv")
        open(f[name], "w").write(text)
    f["latin1"] = str(d / "latin1.csv")
    open(f["latin1"], "wb").write("camera_ref,prompt\ncam.mp4,un café\n".encode("latin-1"))
    f["empty.txt"] = str(d / "empty.txt")
    open(f["empty.txt"], "w").write("\n\n")
    f["latin1.txt"] = str(d / "latin1.txt")
    open(f["latin1.txt"], "wb").write("a prompt\nun café\n".encode("latin-1"))
    f["misfit"] = str(d / "misfit")  # a converted model whose config.json lies about its params
    shutil.copytree(TINY, f["misfit"])
    meta = json.load(open(os.path.join(f["misfit"], "config.json")))
    meta["config"]["ffn_dim"] //= 2
    json.dump(meta, open(os.path.join(f["misfit"], "config.json"), "w"))
    f["empty_dir"] = str(d / "empty_dir")
    os.makedirs(f["empty_dir"])
    f["random.array_record"] = str(d / "random.array_record")
    open(f["random.array_record"], "wb").write(np.random.default_rng(0).bytes(3000))
    return f


# ------------------------------------------------------------------------------ commands
def test_sample(files):
    d, base = files["dir"], ["--checkpoint", TINY, "--frames", "5", "--height", "32",
                             "--width", "32", "--steps", "1"]
    one = base + ["--camera_ref", CAM, "--image", IMAGE]
    check_cases(sample_cli.main, [
        (base + ["--image", IMAGE], "give --camera_ref and --out"),
        (one + ["--out", f"{d}/o.mp4", "--max_crop", "-1"], "--max_crop=-1.0 must be in [0, 1)"),
        (one + ["--out", f"{d}/o.mp4", "--seed", "-3"], "--seed=-3 must be >= 0"),
        (one + ["--out", f"{UNWRITABLE}/o.mp4"], f"--out {UNWRITABLE}/o.mp4 cannot be written"),
        (one + ["--out", files["folder.mp4"]], "is a folder, expected a file"),
        (base + ["--jobs", files["dir"]], f"jobs file {d} is a folder"),
        (base + ["--jobs", files["ragged"]], "ragged.csv:3: 5 fields, the header has 4"),
        (base + ["--jobs", files["headerless"]], "headerless.csv:1: the first line must be a "
                                                 "header"),
        (base + ["--jobs", files["twice"]], f"jobs 1, 3 write {d}/same.mp4"),
        (base + ["--jobs", files["steps"]], "steps.csv: job 2: steps='abc' is not a int"),
        (base + ["--jobs", files["frames"]], "job 1: invalid sample options: frames=-5 must be"),
        (base + ["--jobs", files["unwritable"]], "job 1: out"),
        (base + ["--jobs", files["latin1"]], "is not UTF-8 text (byte 0xe9 on line 2"),
        (base + ["--jobs", files["twice"], "--out_dir", files["a_file"]], "--out_dir"),
        (["--checkpoint", files["misfit"], "--camera_ref", CAM, "--image", IMAGE, "--out",
          f"{d}/o.mp4", "--frames", "5", "--height", "32", "--width", "32", "--steps", "1"],
         "config.json does not describe its params"),
    ])


def test_evaluate(files):
    d = files["dir"]
    gen, cam = os.path.join(d, "gen"), os.path.join(d, "cam")
    for folder in (gen, cam):
        os.makedirs(folder, exist_ok=True)
        for name in ("a", "b"):
            shutil.copy(CAM, os.path.join(folder, f"{name}.mp4"))
    pairs = {"ragged.csv": "generated,camera_ref\na.mp4,a.mp4,x\n",
             "twice.csv": "generated,camera_ref\na.mp4,a.mp4\nb.mp4,b.mp4\na.mp4,b.mp4\n"}
    for name, text in pairs.items():
        open(os.path.join(cam, name), "w").write(text)
    base = ["--generated", gen, "--camera_refs", cam, "--no_fvd", "--quiet"]
    out = ["--out", f"{d}/r.json"]
    check_cases(evaluate.main, [
        (base + ["--out", f"{UNWRITABLE}/r.json"], f"--out {UNWRITABLE}/r.json cannot be written"),
        (base + ["--out", files["folder.mp4"]], "is a folder, expected a file"),
        (base + out + ["--results_dir", files["a_file"]], f"--results_dir {files['a_file']} is a "
                                                          "file"),
        (base + out + ["--workers", "0"], "--workers must be >= 1"),
        (base + out + ["--fov_deg", "-5"], "--fov_deg must be in (0, 180)"),
        (["--generated", f"{d}/nowhere", "--camera_refs", cam] + out, "nowhere"),
        (["--generated", gen, "--camera_refs", f"{cam}/ragged.csv"] + out,
         "ragged.csv:2: 3 fields, the header has 2"),
        (["--generated", gen, "--camera_refs", f"{cam}/twice.csv"] + out,
         "a.mp4 on lines 2, 4"),
    ])


def test_train(files, monkeypatch):
    monkeypatch.chdir(REPO)
    d, work = files["dir"], os.path.join(files["dir"], "work")
    base = ["train", "--config=configs/demo.py", f"--workdir={work}",
            "--config.total_steps=1"]  # were a case to start training, it would be short
    # records configs (the demo's clone world reads no files: a data.path there is an error)
    data = ["train", "--config=configs/synthetic_tiny.py", f"--workdir={work}",
            "--config.total_steps=1", "--config.data.val_path="]
    check_cases(loop.main, [
        (base + ["--config.optim.lrr=1"], "--config.optim.lrr: the config has no key 'lrr' "
                                          "(Did you mean \"lr\""),
        (base + ["--config.batch_size=abc"], "--config.batch_size=abc"),
        (base + ["--config.batch_size=-2"], "--config.batch_size=-2 must be >= 1"),
        (base + ["--config.data.v2v_ratio=1.5"], "--config.data.v2v_ratio=1.5 must be in"),
        (["train", "--config=configs/demo.py"], "--workdir"),
        (["train", f"--config={d}/none.py", f"--workdir={work}"], f"--config {d}/none.py"),
        (["train", f"--config={files['a_file']}", f"--workdir={work}"],
         f"--config {files['a_file']}: module 'config_config' has no attribute 'get_config'"),
        (["train", "--config=configs/demo.py", f"--workdir={files['a_file']}"],
         "is a file, expected a folder"),
        (["train", "--config=configs/demo.py", f"--workdir={UNWRITABLE}/w"],
         f"--workdir {UNWRITABLE}/w cannot be written"),
        (data + [f"--config.data.path={d}/no_data"], "does not exist"),
        (data + [f"--config.data.path={files['empty_dir']}"], "no ArrayRecord files"),
        (data + [f"--config.data.path={files['random.array_record']}"], "corrupt or truncated"),
        (base + [f"--config.data.path={files['empty_dir']}"],
         "data.kind is 'wallpaper' (the procedural clone world reads no files)"),
        (base + ["--config.data.wallpaper.world.scene_scale=2"],
         "scene_scale=2: the end-of-run sample and clone check render views that wrap"),
        (data + ["--config.objective.new_content_weight=0.5"],
         "new_content_weight=0.5 weighs the content the first frame did not show"),
        (base + ["--config.objective.new_content_weight=2.0"],
         "new_content_weight must be in [0, 1], got 2.0"),
        (data + ["--config.data.wallpaper_mix=0.5", "--config.data.text=cached"],
         "data.wallpaper_mix=0.5 mixes the wallpaper world's pixel-codec latents into latent "
         "records of the pixel codec without cached text; this run has data.kind='latent'"),
        (base + ["--config.data.wallpaper_mix=0.5"],
         "data.wallpaper_mix=0.5 mixes the wallpaper world's pixel-codec latents into latent "
         "records of the pixel codec without cached text; this run has data.kind='wallpaper'"),
        (["train", "--config=configs/clone_3d.py", f"--workdir={work}",
          "--config.data.wallpaper_mix=0.5"],
         "data.wallpaper_mix: the wallpaper world makes clips (frames, height, width) "
         "(17, 16, 16)"),
    ])
    assert not os.path.exists(work)  # each failed start removed the workdir it created


def test_convert(files):
    d = files["dir"]
    check_cases(convert_main, [
        (["import", "--src", TINY, "--out", f"{d}/c", "--config_json", "{bad"],
         "--config_json is not valid JSON"),
        (["import", "--src", TINY, "--out", files["a_file"]], "already exists; pass --overwrite"),
        (["import", "--src", TINY, "--out", f"{UNWRITABLE}/c"], "cannot be written"),
        (["export", "--src", TINY, "--out", f"{files['a_file']}/x.safetensors", "--format",
          "original"], "is a file, not a folder"),
        (["info", "--src", f"{d}/nowhere"], "no such weight file"),
        (["info", "--src", files["misfit"]], "config.json does not describe its params"),
    ])


def test_encode_prompts(files):
    d = files["dir"]
    base = ["--t5", f"{d}/t5", "--tokenizer", f"{d}/tok"]
    out = ["--out", f"{d}/cache"]
    check_cases(prompts.main, [
        (base + ["--prompts", files["empty.txt"], "--out", files["a_file"]], "--out"),
        (base + ["--prompts", d] + out, f"prompt file {d} is a folder"),
        (base + ["--prompts", files["empty.txt"]] + out, "holds no prompts"),
        (base + ["--prompts", files["latin1.txt"]] + out, "byte 0xe9 on line 2"),
        (base + ["--prompts", files["ragged"]] + out + ["--batch_size", "0"],
         "--batch_size must be >= 1"),
        (base + ["--prompts", files["ragged"]] + out, "tok"),
    ])


def test_data_commands(files, monkeypatch):
    d = files["dir"]
    cols = ",".join(prepare.CSV_COLUMNS)
    for name, text in (("p_ragged.csv", f"{cols}\na.mp4,cap,b.mp4,c.mp4,extra\n"),
                       ("p_headerless.csv", "a.mp4,cap,b.mp4,c.mp4\n")):
        open(os.path.join(d, name), "w").write(text)
    out = ["--out", f"{d}/prepared"]
    check_cases(prepare.main, [
        (["--csv", f"{d}/p_ragged.csv"] + out, "p_ragged.csv:2: 5 fields, the header has 4"),
        (["--csv", f"{d}/p_headerless.csv"] + out, "the first line must be a header"),
        (["--csv", f"{d}/none.csv"] + out, "--csv not found"),
        (["--csv", f"{d}/p_ragged.csv", "--num_shards", "0"] + out, "--num_shards must be >= 1"),
        (["--csv", f"{d}/p_ragged.csv", "--out", files["a_file"]], "is a file"),
    ])
    check_cases(encode_lib.main, [
        (["--records", d, "--vae", "pixel", "--out", files["a_file"]], "is a file"),
        (["--records", d, "--vae", "pixel", "--out", f"{d}/enc", "--batch_size", "0"],
         "--batch_size must be >= 1"),
        (["--records", f"{d}/nowhere", "--vae", "pixel", "--out", f"{d}/enc", "--frames", "9"],
         f"ArrayRecord file not found: {d}/nowhere"),
    ])
    check_cases(synthetic_main, [
        (["--out", files["a_file"], "--quiet"], "is a file"),
        (["--out", f"{d}/syn", "--frames", "-1", "--quiet"], "frames"),
    ])
    monkeypatch.setenv("CAMCLONE_DISTRIBUTED", "bogus")
    check_cases(lambda argv: distributed.main(), [([], "distributed mode 'bogus'")])


# ------------------------------------------------------------------------------ the pieces
def test_output_checks_name_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    errors.check_output_file("new/deeper/out.mp4", "--out")  # folders to be created: fine
    errors.check_output_dir("new/run", "--workdir")
    os.makedirs("d")
    open("f", "w").close()
    for check, path, want in ((errors.check_output_file, "d", "--out d is a folder"),
                              (errors.check_output_file, "f/x.mp4", "--out f/x.mp4 cannot be "
                               f"written: {tmp_path}/f is a file"),
                              (errors.check_output_dir, "f", "--out f is a file"),
                              (errors.check_output_dir, "f/run", "--out f/run cannot be created")):
        with pytest.raises(errors.UserError, match=want):
            check(path, "--out")
    assert sorted(os.listdir(".")) == ["d", "f"]  # no probe file left
    assert errors.message(KeyError("'a'\nDid you mean 'b'?")) == "'a'; Did you mean 'b'?"
    assert errors.message(OSError(28, "No space left on device", "out")) == \
        "out: No space left on device"


def test_a_bom_is_read_and_a_full_disk_under_ffmpeg_said_so(tmp_path, monkeypatch):
    jobs = tmp_path / "bom.csv"
    jobs.write_bytes(f"\ufeffcamera_ref,image,out\n{CAM},{IMAGE},o.mp4\n".encode("utf-8"))
    assert sample_cli.read_jobs(str(jobs))[0]["camera_ref"] == CAM
    monkeypatch.setattr(video, "_ffmpeg", lambda *a, **k: ("", "received no packets", 1))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(OSError, match="No space left on device") as e:
        video.write_mp4(str(tmp_path / "o.mp4"), np.zeros((2, 16, 16, 3), np.uint8), 8.0)
    assert e.value.filename == str(tmp_path / "o.mp4") and os.listdir(tmp_path) == ["bom.csv"]


def test_a_resume_without_the_data_file_says_why(tmp_path):
    ckpts = ckpt_lib.Checkpointer(str(tmp_path), save_every=1, keep=1)
    os.makedirs(tmp_path / "3" / "data")
    assert ckpts.why_no_data_state(3).endswith("3/data/process_0-of-1.json is missing")
    open(tmp_path / "3" / "data" / "process_1-of-2.json", "w").close()
    assert ckpts.why_no_data_state(3) == "it was written by 2 process(es), this run has 1"
    ckpts.close()


# ------------------------------------------------------------------------------ end to end
def _python_m(module, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=240, **kwargs)


def test_commands_as_subprocesses_exit_2_in_one_line(files):
    """A config override (absl's flag parsing), a jobs file and an output in the way, each a
    real ``python -m``: exit status 2 and one stderr line."""
    d = files["dir"]
    runs = [
        (["camclone_jax.train", "--config=configs/demo.py", f"--workdir={d}/w",
          "--config.optim.lrr=1"], "--config.optim.lrr"),
        (["camclone_jax.sample", "--checkpoint", TINY, "--jobs", files["ragged"]],
         "ragged.csv:3"),
        (["camclone_jax.data.synthetic", "--out", files["a_file"], "--quiet"], "is a file"),
    ]
    for argv, want in runs:
        out = _python_m(*argv)
        assert out.returncode == 2 and out.stderr.strip().splitlines() == \
            [out.stderr.strip().splitlines()[-1]] and want in out.stderr, (argv, out.stderr[-2000:])


def test_a_failed_orbax_write_is_one_line_and_leaves_no_temporary_folder(tmp_path):
    """A file-size limit fails tensorstore's writes as a full disk would (EFBIG, not ENOSPC),
    with orbax's logged errors and asyncio's late reports: one line, nothing left."""
    out = tmp_path / "out" / "ours"
    os.makedirs(out.parent)
    # files of at most 195 KiB (the tiny model's params are about 1 MB)
    run = subprocess.run(["bash", "-c", 'ulimit -f 195 && exec "$0" -m camclone_jax.convert '
                          'import --src "$1" --out "$2"', sys.executable, TINY, str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip() == f"error: import failed at {out}: File too large"
    assert os.listdir(out.parent) == []


def test_unstarted_orbax_writes_are_not_warned_of_at_exit():
    """A failed orbax write can leave tensorstore coroutines unstarted, which Python warns of
    when they are collected (at exit: 'sys:1: RuntimeWarning: coroutine ... never awaited');
    once quiet_orbax has been used those are dropped, and other coroutines still warn."""
    script = (
        "import gc\n"
        "from camclone_jax.convert.io import quiet_orbax\n"
        "async def write_fragment(): pass\n"
        "write_fragment.__qualname__ = 'async_serialize_from_host.<locals>.write_fragment'\n"
        "async def ours(): pass\n"
        "with quiet_orbax(): pass\n"
        "orbax_left = write_fragment()\n"
        "del orbax_left; gc.collect()\n"
        "ours_left = ours()\n"
        "del ours_left; gc.collect()\n"
        # a read of a corrupt checkpoint that fails again when collected, after the restore
        # that started it has failed: orbax's is dropped, another coroutine's still reported
        "class Pause:\n"
        "    def __await__(self): yield\n"
        "async def _read_array_index_and_device_put():\n"
        "    try: await Pause()\n"
        "    finally: raise Exception('Encountered error while reading array index')\n"
        "async def ours_failing():\n"
        "    try: await Pause()\n"
        "    finally: raise Exception('ours failed')\n"
        "for make in (_read_array_index_and_device_put, ours_failing):\n"
        "    started = make(); started.send(None)\n"
        "    del started; gc.collect()\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "write_fragment" not in run.stderr, run.stderr
    assert "coroutine 'ours' was never awaited" in run.stderr, run.stderr
    assert "reading array index" not in run.stderr, run.stderr
    assert "ours failed" in run.stderr, run.stderr


def test_evaluate_stops_on_ctrl_c_in_one_line(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) while workers score: one line, exit status
    130, no worker's traceback; the finished videos stay for --resume."""
    gen, cam = tmp_path / "gen", tmp_path / "cam"
    for folder in (gen, cam):
        os.makedirs(folder)
        for i in range(12):
            shutil.copy(CAM, folder / f"v{i}.mp4")
    cmd = [sys.executable, "-m", "camclone_jax.evaluate", "--generated", str(gen),
           "--camera_refs", str(cam), "--out", str(tmp_path / "r.json"), "--no_fvd",
           "--workers", "2", "--no_dynamic_degree", "--no_matched_pixels"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    results = tmp_path / "r.videos"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (
            results.is_dir() and any(n.endswith(".json") for n in os.listdir(results))):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"error: interrupted by SIGINT: the videos finished so far are kept in {results}; "
        "rerun with --resume to continue")
    assert any(n.endswith(".json") for n in os.listdir(results))
    assert not (tmp_path / "r.json").exists()
