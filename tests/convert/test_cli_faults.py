"""The convert CLI on hostile inputs: malformed safetensors headers, a read-only --out,
weights holding NaN or inf. Errors are exit status 2 with one line naming the file."""

import errno
import json
import os
import struct
import tempfile

import numpy as np
import pytest

from camclone_jax.convert import io
from camclone_jax.convert import transformer as conv
from camclone_jax.convert.__main__ import main as convert_main
from camclone_jax.models import DiTConfig
from camclone_jax.models import params as params_lib


def _raw_safetensors(path, header, body):
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + body)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny DiT in our converted format, and its params."""
    cfg = DiTConfig(dim=16, ffn_dim=32, num_layers=1, num_heads=2, in_channels=4, out_channels=4,
                    text_dim=8, freq_dim=16)
    params = params_lib.init_params(cfg, 0)
    path = str(tmp_path_factory.mktemp("tiny") / "dit")
    conv.save_transformer(path, cfg, params)
    return path, cfg, params


def test_malformed_safetensors_headers_name_the_file(tmp_path, capsys):
    listed = str(tmp_path / "list.safetensors")
    _raw_safetensors(listed, ["a", "b"], b"")
    assert convert_main(["info", "--src", listed]) == 2
    assert f"{listed}: the safetensors header is a JSON list" in capsys.readouterr().err
    short = str(tmp_path / "short.safetensors")
    _raw_safetensors(short, {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32]}},
                     bytes(64))
    assert convert_main(["info", "--src", short]) == 2
    err = capsys.readouterr().err
    assert f"{short}: tensor 'w'" in err and "holds 32 bytes" in err and "needs 64" in err
    with pytest.raises(io.WeightFileError, match="malformed shape"):
        _raw_safetensors(short, {"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}},
                         bytes(16))
        io.read_safetensors(short)


def test_a_read_only_out_is_status_2_naming_it_and_leaves_nothing(tiny, tmp_path, capsys,
                                                                   monkeypatch):
    src, _, _ = tiny
    out = tmp_path / "ro" / "ours"

    def read_only(*args, dir=None, **kwargs):  # root ignores chmod: the refusal is injected
        raise PermissionError(errno.EACCES, "Permission denied", dir)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert convert_main(["import", "--src", src, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: import failed at {out.parent}: Permission denied"
    assert not os.path.exists(out)


def test_weights_with_nan_or_inf_are_warned_about(tiny, tmp_path, capsys):
    src, cfg, params = tiny
    bad = {k: dict(v) if isinstance(v, dict) else v for k, v in params.items()}
    kernel = np.array(bad["patch_embedding"]["kernel"])
    kernel.flat[3] = np.nan
    bad["patch_embedding"]["kernel"] = kernel
    conv.save_transformer(str(tmp_path / "nan"), cfg, bad)
    assert convert_main(["info", "--src", str(tmp_path / "nan")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'nan'}: 1 weight array(s) hold NaN or inf: " \
           "patch_embedding/kernel" in err
    assert convert_main(["info", "--src", src]) == 0 and "warning" not in capsys.readouterr().err
