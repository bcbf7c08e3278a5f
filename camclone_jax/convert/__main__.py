"""Command line: import PyTorch weights into our format, or export ours back to PyTorch.

  python -m camclone_jax.convert import --src Wan2.1-T2V-1.3B-Diffusers/transformer --out ckpt/dit
  python -m camclone_jax.convert import --src CamCloneMaster/step.ckpt --out ckpt/camclone
  python -m camclone_jax.convert import --kind vae --src Wan2.1_VAE.pth --out ckpt/vae
  python -m camclone_jax.convert import --kind t5 --src models_t5_umt5-xxl-enc-bf16.pth --out ckpt/t5
  python -m camclone_jax.convert import --kind clip --src open-clip-xlm-roberta-large-vit-huge-14.pth --out ckpt/clip
  python -m camclone_jax.convert export --src ckpt/dit --out exported/transformer [--format original]
  python -m camclone_jax.convert info --src ckpt/dit

``--kind auto`` reads the kind from a diffusers config.json (``_class_name``) or from our
converted directory; plain files default to the transformer. Outputs are written atomically:
on any error nothing is left at ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys

from camclone_jax import errors, utils
from camclone_jax.convert import io
from camclone_jax.models.params import count_params

# kind -> (module, load fn, save fn, export fn); every module follows the same signatures.
KINDS = {
    "transformer": ("camclone_jax.convert.transformer", "load_transformer", "save_transformer",
                    "export_transformer"),
    "vae": ("camclone_jax.convert.vae", "load_vae", "save_vae", "export_vae"),
    "t5": ("camclone_jax.convert.encoders", "load_t5", "save_t5", "export_t5"),
    "clip": ("camclone_jax.convert.encoders", "load_clip", "save_clip", None),  # import only
}
_CLASS_KIND = {"WanTransformer3DModel": "transformer", "AutoencoderKLWan": "vae",
               "UMT5EncoderModel": "t5", "UMT5ForConditionalGeneration": "t5",
               "CLIPVisionModel": "clip", "CLIPVisionModelWithProjection": "clip",
               "CLIPModel": "clip"}
_CONVERTED_KIND = {"dit": "transformer", "vae": "vae", "t5": "t5", "clip": "clip"}


def detect_kind(path: str) -> str:
    """transformer or vae, from the source's own description; transformer for bare files."""
    if io.is_converted_dir(path):
        kind = utils.read_json(os.path.join(path, "config.json"))["kind"]
        return _CONVERTED_KIND.get(kind, kind)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        meta = utils.read_json(os.path.join(path, "config.json"))
        name = meta.get("_class_name") or (meta.get("architectures") or [None])[0]
        if name not in _CLASS_KIND:
            raise io.WeightFileError(f"{path}: config.json describes {name!r}; supported: "
                                     f"{sorted(_CLASS_KIND)}")
        return _CLASS_KIND[name]
    return "transformer"


def _fns(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {sorted(KINDS)}")
    module, load, save, export = KINDS[kind]
    mod = importlib.import_module(module)
    return getattr(mod, load), getattr(mod, save), getattr(mod, export) if export else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camclone_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="PyTorch weights -> our orbax format")
    exp = sub.add_parser("export", help="our format -> diffusers directory or original file")
    info = sub.add_parser("info", help="print the config and parameter count of any source")
    for p in (imp, exp, info):
        p.add_argument("--src", required=True, help="source file or directory")
        p.add_argument("--kind", default="auto", choices=["auto", *KINDS])
    for p in (imp, exp):
        p.add_argument("--out", required=True, help="output directory (or file for --format original)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    imp.add_argument("--config_json", default=None,
                     help="JSON of config fields for files without a config (e.g. "
                          "'{\"num_heads\": 12}'); overrides what is inferred")
    exp.add_argument("--format", default="diffusers", choices=["diffusers", "original"])
    args = parser.parse_args(argv)

    try:
        overrides = _config_json(getattr(args, "config_json", None))
        if args.command != "info":  # before anything is read
            _check_out(args)
        kind = detect_kind(args.src) if args.kind == "auto" else args.kind
        load, save, export = _fns(kind)
        config, params = load(args.src, **overrides)

        n = count_params(params)
        _warn_nonfinite(args.src, params)
        if args.command == "import":
            save(args.out, config, params, source=os.path.abspath(args.src), overwrite=args.overwrite)
            print(f"imported {kind} ({n:,} params) from {args.src} -> {args.out}")
        elif args.command == "export":
            if export is None:
                raise ValueError(f"export is not supported for kind {kind!r}")
            kwargs = {}
            if kind == "transformer":
                kwargs = {"fmt": args.format}
            elif kind == "t5":
                kwargs = {"fmt": "original" if args.format == "original" else "transformers"}
            export(config, params, args.out, overwrite=args.overwrite, **kwargs)
            print(f"exported {kind} ({n:,} params) -> {args.out} ({args.format})")
        else:
            print(json.dumps({"kind": kind, "params": n, "config": _as_dict(config)}, indent=2))
    except OSError as e:  # a read-only or full --out, an unreadable --src: nothing is left at --out
        if e.strerror is None or isinstance(e, (FileNotFoundError, FileExistsError)):
            return errors.report(e)  # a message of ours, naming the path
        where = e.filename or getattr(args, "out", None) or args.src
        print(f"error: {args.command} failed at {where}: {e.strerror}", file=sys.stderr)
        return errors.EXIT_USER_ERROR
    except errors.USER_ERRORS + (KeyError,) as e:
        return errors.report(e)
    return 0


def _config_json(text: str | None) -> dict:
    """--config_json's fields (a JSON object)."""
    if not text:
        return {}
    try:
        fields = json.loads(text)
    except ValueError as e:
        raise errors.UserError(f"--config_json is not valid JSON ({e}): {text[:80]!r}") from None
    if not isinstance(fields, dict):
        raise errors.UserError(f"--config_json must be a JSON object of config fields, got "
                               f"{text[:80]!r}")
    return fields


def _check_out(args):
    """--out can be written and is free (or --overwrite): checked before the source is read."""
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"--out {args.out} already exists; pass --overwrite to replace it")
    if getattr(args, "format", None) == "original":  # one file
        errors.check_output_file(args.out, "--out")
    else:
        errors.check_output_dir(args.out, "--out")


def _warn_nonfinite(src: str, params):
    """Warns (stderr) when the weights read from ``src`` hold NaN or inf."""
    bad = io.nonfinite_params(params)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        print(f"warning: {src}: {len(bad)} weight array(s) hold NaN or inf: "
              f"{', '.join(bad[:5])}{more}", file=sys.stderr)


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


if __name__ == "__main__":
    sys.exit(main())
