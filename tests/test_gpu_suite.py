"""benchmarks/gpu_suite.sh, the one command for a lent GPU machine, kept from rotting on the CPU:
``--dry`` end to end (wheel install into a fresh folder, every item in one worker with the
packages the GPU machine lacks blocked, then the full-size 1.3B programs lowered for CUDA with
the jax CUDA plugin), the driver's budget, its GPU loop, bad input and the wheel repack."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import jaxlib
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE_SH = os.path.join(REPO, "benchmarks", "gpu_suite.sh")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import gpu_suite as suite  # noqa: E402


def make_wheel(folder, name, files, tag="py3-none-any"):
    """A minimal valid wheel of ``files`` ({path: bytes}); returns its path."""
    dist_info = f"{name}-0.1.dist-info"
    files = dict(files)
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode()
    files[f"{dist_info}/WHEEL"] = f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
              f"{len(d)}" for p, d in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = os.path.join(folder, f"{name}-0.1-{tag}.whl")
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
    return path


def cuda_plugin(cache_dir) -> tuple[str | None, str]:
    """A folder holding the jax CUDA plugin that matches this jaxlib (downloaded once into the
    pytest cache), or (None, why not)."""
    version = jaxlib.__version__
    folder = os.path.join(cache_dir, f"jax_cuda_plugin-{version}")
    if any(os.path.isdir(os.path.join(folder, f"jax_cuda{v}_plugin")) for v in (13, 12)):
        return folder, ""
    why = []
    for name in ("jax-cuda13-plugin", "jax-cuda12-plugin"):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--only-binary=:all:", "--disable-pip-version-check",
                               "--target", folder, f"{name}=={version}"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            return folder, ""
        why.append(f"{name}=={version}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return None, "; ".join(why)


def test_dry_run_measures_every_item_and_lowers_the_1_3b_programs_for_cuda(tmp_path, request):
    """The whole suite at a tiny size on the CPU: every item measured, JSON written. The install
    step runs on the carried wheels where benchmarks/wheels holds them (a developer's tree), else
    (CI: the folder is ignored by git) on a probe wheel made here, so it always runs. Its last
    item lowers the full-size 1.3B training step (480x832x81 and 384x672x77, bf16, cuDNN
    attention, full remat) and the guided sampling step for platform "cuda", with the jax CUDA
    plugin on the path; jax.export refuses them unless the check of the cuDNN calls is disabled.
    Skipped, after all of that passed, only where the plugin cannot be installed."""
    wheels = suite.WHEELS_DIR
    if not os.path.isdir(wheels) or not any(f.endswith(".whl") for f in os.listdir(wheels)):
        wheels = str(tmp_path / "wheels")
        os.makedirs(wheels)
        make_wheel(wheels, "camclone_probe", {"camclone_probe/__init__.py": b"VALUE = 1\n"})
    plugin, why = cuda_plugin(str(request.config.cache.mkdir("gpu_suite")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [p for p in (plugin, REPO, os.environ.get("PYTHONPATH")) if p]))
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SUITE_SH, "--dry", "--out", str(out), "--wheels", wheels,
                           "--site", str(tmp_path / "site")], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert summary["mode"] == "dry" and summary["not_run"] == {}
    assert list(summary["items"]) == list(suite.DRY_ITEMS)
    for item, res in summary["items"].items():
        assert "error" not in res, (item, res.get("traceback"))
    items = summary["items"]
    ours = items["train_480_ours"]
    assert ours["s_per_step"] > 0 and ours["flops_per_step"] > 0 and ours["tokens"] > 0
    assert items["train_480_pytorch"]["s_per_step"] > 0
    assert items["sample_step_ours"]["s_per_step"] > 0
    assert items["sample_step_pytorch"]["s_per_step"] > 0
    assert [items[f"sample_480_{m}"]["cfg_batched"] for m in ("batched", "sequential")] == [
        True, False]
    assert "baseline (release)" in items["cost_cutting"]["table"]
    assert set(summary["goals"]) >= {"train_480_mfu", "sample_step_speedup_vs_diffusers"}
    installed = summary["install"]["installed"]
    assert installed and summary["install"]["site"] == str(tmp_path / "site")
    if any(w.startswith("diffusers-") for w in installed):  # the carried copy served the items
        assert items["train_480_pytorch"]["imported_from"]["diffusers"].startswith(
            str(tmp_path / "site"))
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["item"] for line in lines] == list(suite.DRY_ITEMS)

    lowered = items["lower_cuda"]
    assert lowered["backend_here"] == "cpu"
    fwd, bwd = "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"
    for res, tokens in (("480", 98_280), ("384", 60_480)):
        assert lowered[f"train_{res}"]["tokens"] == tokens
        assert {fwd, bwd} <= set(lowered[f"train_{res}"]["custom_calls"])
    assert fwd in lowered["sample_step"]["custom_calls"]
    assert lowered["sample_step"]["tokens"] == 98_280
    export = lowered["export_train_480"]
    assert "custom calls" in export["refused_without_disabled_checks"]
    assert export["platforms"] == ["cuda"] and export["stablehlo_chars"] > 0
    if plugin is None:
        pytest.skip(f"the jax CUDA plugin could not be installed ({why}); the suite and the "
                    "CUDA lowering without it passed")
    assert lowered["cuda_plugin"] is not None, lowered["cudnn_source"]


def test_budget_leaves_items_unrun_in_order_with_the_json_written(tmp_path):
    """Out of time, the GPU-mode loop starts no worker and says why, per item."""
    out = tmp_path / "out"
    rc = suite.main(["--budget_s", "1", "--out", str(out), "--wheels", str(tmp_path / "none"),
                     "--site", str(tmp_path / "site"), "--items", "train_480_ours,cost_cutting"])
    assert rc == 0
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert summary["items"] == {} and list(summary["not_run"]) == ["train_480_ours",
                                                                    "cost_cutting"]
    assert all(why.startswith("budget") for why in summary["not_run"].values())


def test_gpu_loop_shrinks_the_whole_sample_to_the_time_left(tmp_path, monkeypatch):
    """One worker per item; the whole sample gets the steps the budget holds, and its 50-step
    time is estimated from the sampling-step item (workers faked: no GPU here)."""
    def spawn(self, items, steps, timeout):
        [item] = items
        res = ({"s_per_step": 2.0} if item == "sample_step_ours" else
               {"seconds": 100.0, "steps": steps, "peak_bytes": 2**30})
        with open(self.results, "a") as f:
            f.write(json.dumps(dict(res, item=item)) + "\n")

    monkeypatch.setattr(suite.Suite, "spawn", spawn)
    out = tmp_path / "out"
    assert suite.main(["--budget_s", "250", "--out", str(out), "--wheels", str(tmp_path),
                       "--site", str(tmp_path / "site"),
                       "--items", "sample_step_ours,sample_480_batched"]) == 0
    res = json.loads((out / "gpu_suite.json").read_text())["items"]["sample_480_batched"]
    steps = int((250 - suite.SAMPLE_OVERHEAD_S) / 2.4)
    assert res["steps"] == steps < suite.FULL_STEPS and "time left" in res["note"]
    assert res["estimated_50_step_s"] == pytest.approx(100.0 + (50 - steps) * 2.0)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["estimated_50_step_s"] == res["estimated_50_step_s"]


@pytest.mark.parametrize("argv, message", [
    (["--items", "train_480_ours,nope"], "unknown item"),
    (["--budget_s", "-5"], "--budget_s must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert suite.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_sample_steps_shrink_to_the_time_left():
    items = {"sample_step_ours": {"s_per_step": 2.0}}
    assert suite._sample_steps(items, 1000.0) == (suite.FULL_STEPS, None)
    steps, note = suite._sample_steps(items, 200.0)
    assert steps == int((200.0 - suite.SAMPLE_OVERHEAD_S) / 2.4) and "estimated_50_step_s" in note
    assert suite._sample_steps({}, 10.0) == (suite.FULL_STEPS, None)  # nothing to estimate with


def test_goals_use_the_same_model_flops_for_both_frameworks():
    items = {"train_480_ours": {"s_per_step": 1.0, "mfu": 0.5, "flops_per_step": 1e15,
                                "peak_flops": 989e12},
             "train_480_pytorch": {"s_per_step": 2.0},
             "sample_480_sequential": {"peak_bytes": 12 * 2**30}}
    goals = suite.goals(items)
    assert goals["train_480_speedup_vs_pytorch"] == {"value": 2.0, "goal": ">= 1.3", "met": True}
    assert goals["train_480_mfu"]["met"] is True and goals["train_384_mfu"]["met"] is None
    assert goals["sample_480_sequential_peak_gib"]["met"] is True
    assert items["train_480_pytorch"]["mfu"] == pytest.approx(1e15 / (2.0 * 989e12))


def test_imageio_ffmpeg_wheel_travels_without_its_binary(tmp_path):
    path = make_wheel(str(tmp_path), "imageio_ffmpeg", {
        "imageio_ffmpeg/__init__.py": b"", "imageio_ffmpeg/binaries/README.md": b"x",
        "imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v7.0.2": b"\0" * 1000},
        tag="py3-none-manylinux_2_28_x86_64")
    slim = suite.slim_imageio_ffmpeg(path)
    assert os.path.basename(slim) == "imageio_ffmpeg-0.1-py3-none-any.whl"
    assert not os.path.exists(path) and suite.fits_here(slim)
    with zipfile.ZipFile(slim) as z:
        names = z.namelist()
        record = z.read("imageio_ffmpeg-0.1.dist-info/RECORD").decode()
        wheel = z.read("imageio_ffmpeg-0.1.dist-info/WHEEL").decode()
    assert not any("binaries/ffmpeg" in n for n in names)
    assert "imageio_ffmpeg/__init__.py,sha256=" in record and "ffmpeg-linux" not in record
    assert wheel.strip().endswith("Tag: py3-none-any") and wheel.count("Tag:") == 1
