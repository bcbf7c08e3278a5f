"""Prompt-embedding cache: encode every prompt once with umT5, reuse the embeddings everywhere.

  python -m camclone_jax.encode_prompts --t5 Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth \\
      --tokenizer Wan2.1-T2V-1.3B/google/umt5-xxl --prompts captions.txt --out cache/prompts

``--prompts`` is a .txt (one prompt a line, blank lines skipped) or a .jsonl (one JSON string or
object a line; objects give their "prompt", "caption" or "text" field). The negative prompt
(default: Wan's standard one, ``WAN_NEGATIVE_PROMPT``) is always added. Re-running skips prompts
already in the cache, so a growing caption file costs only its new lines.

On disk: ``DIR/index.json`` (encoder config, max_length, dim, and ``{key: {prompt, length,
file}}``) and one ``DIR/emb/<key>.npy`` per prompt holding the ``length`` valid rows
([length, dim] float32; the rows past the prompt are zero by construction and not stored).
``key`` is the SHA-256 of the prompt text. Every file is written beside its destination and
renamed into place, and the index is rewritten after each batch, so an interrupted run leaves a
valid cache of what it finished. ``PromptCache(DIR).get(prompt)`` returns [max_length, dim].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Iterable, Sequence

import numpy as np

from camclone_jax import errors, utils
from camclone_jax.convert.encoders import load_t5
from camclone_jax.models.t5 import encode_prompts, prepare_params
from camclone_jax.models.tokenizer import load_tokenizer

# Wan 2.1's sample_neg_prompt (wan/configs/shared_config.py), used with CFG by the Wan and
# CamCloneMaster samplers.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
INDEX = "index.json"
_JSON_FIELDS = ("prompt", "caption", "text")


def prompt_key(prompt: str) -> str:
    """Cache key of a prompt: hex SHA-256 of its UTF-8 text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def read_prompts(path: str) -> list[str]:
    """Prompts of a .txt (one a line) or .jsonl file, in order, duplicates kept (a UTF-8
    byte-order mark is allowed; other encodings and a file without prompts are refused)."""
    prompts = []
    for n, line in enumerate(errors.read_text(path, "prompt file").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not path.endswith(".jsonl"):
            prompts.append(line)
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: invalid JSON ({e})") from None
        if isinstance(item, dict):
            field = next((k for k in _JSON_FIELDS if isinstance(item.get(k), str)), None)
            if field is None:
                raise ValueError(f"{path}:{n}: object has none of the fields {_JSON_FIELDS}")
            item = item[field]
        if not isinstance(item, str):
            raise ValueError(f"{path}:{n}: expected a string or an object, got "
                             f"{type(item).__name__}")
        prompts.append(item)
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts")
    return prompts


class PromptCache:
    """Read access to a cache directory: ``get(prompt) -> [max_length, dim]`` float32."""

    def __init__(self, path: str):
        self.path = path
        self.index = utils.read_json(os.path.join(path, INDEX))
        for field in ("max_length", "dim", "prompts"):
            if field not in self.index:
                raise ValueError(f"{path}/{INDEX} is not a prompt-cache index (no {field!r})")
        self.max_length = int(self.index["max_length"])
        self.dim = int(self.index["dim"])

    def __len__(self) -> int:
        return len(self.index["prompts"])

    def __contains__(self, prompt: str) -> bool:
        return prompt_key(prompt) in self.index["prompts"]

    @property
    def negative_prompt(self) -> str | None:
        """The negative prompt the cache was built with."""
        return self.index.get("negative_prompt")

    def length(self, prompt: str) -> int:
        """Number of tokens (with EOS) of a cached prompt."""
        return int(self._entry(prompt)["length"])

    def _entry(self, prompt: str) -> dict:
        entry = self.index["prompts"].get(prompt_key(prompt))
        if entry is None:
            shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            raise KeyError(f"prompt not in the cache {self.path}: {shown!r}; add it with "
                           "python -m camclone_jax.encode_prompts --prompts FILE --out "
                           f"{self.path}")
        return entry

    def get(self, prompt: str) -> np.ndarray:
        """Embeddings [max_length, dim] float32 of a cached prompt (zero past its length)."""
        entry = self._entry(prompt)
        rows = np.load(os.path.join(self.path, entry["file"]))  # [length, dim]
        if rows.shape != (entry["length"], self.dim):
            raise ValueError(f"{self.path}/{entry['file']}: shape {rows.shape}, index says "
                             f"({entry['length']}, {self.dim}); the cache is damaged")
        out = np.zeros((self.max_length, self.dim), np.float32)  # [L, dim]
        out[:len(rows)] = rows
        return out

    def get_batch(self, prompts: Sequence[str]) -> np.ndarray:
        """Stacked embeddings [b, max_length, dim]."""
        return np.stack([self.get(p) for p in prompts])


def _write_index(path: str, index: dict):
    with utils.atomic_file(os.path.join(path, INDEX)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(index, f, ensure_ascii=False, indent=1)


def build_prompt_cache(out: str, prompts: Iterable[str], tokenizer, config, params, *,
                       negative_prompt: str | None = WAN_NEGATIVE_PROMPT, max_length: int = 512,
                       batch_size: int = 8, source: str = "", log=print) -> dict:
    """Encodes the prompts not yet in ``out`` (plus the negative prompt) and records them.

    Returns {"encoded": n new, "skipped": n already cached, "total": n in the cache}. Refuses
    (ValueError) to extend a cache built with another encoder config or max_length.
    """
    os.makedirs(os.path.join(out, "emb"), exist_ok=True)
    header = {"encoder": config.to_dict(), "max_length": max_length, "dim": config.dim}
    index_path = os.path.join(out, INDEX)
    if os.path.exists(index_path):
        index = utils.read_json(index_path)
        for field, value in header.items():
            if index.get(field) != value:
                raise ValueError(f"{out} was built with a different {field} ({index.get(field)} "
                                 f"vs {value}); use another --out")
    else:
        index = {**header, "source": source, "prompts": {}}
    if negative_prompt is not None:
        index["negative_prompt"] = negative_prompt
    wanted = list(dict.fromkeys(list(prompts) + ([negative_prompt] if negative_prompt is not None
                                                 else [])))
    todo = [p for p in wanted if prompt_key(p) not in index["prompts"]]
    params = prepare_params(config, params)  # host -> device once, not once per chunk
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        emb, lengths = encode_prompts(chunk, tokenizer, config, params, max_length=max_length,
                                      batch_size=batch_size)  # [b, L, dim], [b]
        for prompt, rows, n in zip(chunk, emb, lengths):
            key = prompt_key(prompt)
            rel = f"emb/{key}.npy"
            with utils.atomic_file(os.path.join(out, rel)) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(rows[:n], np.float32))  # [length, dim]
            index["prompts"][key] = {"prompt": prompt, "length": int(n), "file": rel}
        _write_index(out, index)
        log(f"encoded {min(start + batch_size, len(todo))}/{len(todo)} new prompts")
    if not todo:
        _write_index(out, index)
    return {"encoded": len(todo), "skipped": len(wanted) - len(todo),
            "total": len(index["prompts"])}


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m camclone_jax.encode_prompts",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t5", required=True, help="umT5 weights: Wan .pth, transformers "
                        "UMT5EncoderModel directory, or a converted directory")
    parser.add_argument("--tokenizer", required=True,
                        help="tokenizer.json, a sentencepiece .model, or a folder with one")
    parser.add_argument("--prompts", required=True, help=".txt (one a line) or .jsonl")
    parser.add_argument("--out", required=True, help="cache directory (created or extended)")
    parser.add_argument("--negative_prompt", default=WAN_NEGATIVE_PROMPT,
                        help="negative prompt to cache too (default: Wan's standard one)")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype of the encoder (stored embeddings are float32)")
    args = parser.parse_args(argv)
    for flag in ("max_length", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    try:
        errors.check_output_dir(args.out, "--out")  # before the encoder loads
        prompts = read_prompts(args.prompts)
        tokenizer = load_tokenizer(args.tokenizer)
        config, params = load_t5(args.t5, dtype=args.dtype, param_dtype=args.dtype)
        stats = build_prompt_cache(args.out, prompts, tokenizer, config, params,
                                   negative_prompt=args.negative_prompt,
                                   max_length=args.max_length, batch_size=args.batch_size,
                                   source=os.path.abspath(args.t5))
    except errors.USER_ERRORS as e:
        return errors.report(e)
    print(f"{stats['encoded']} encoded, {stats['skipped']} already cached, "
          f"{stats['total']} prompts in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
