"""Text tokenizers from local files: a ``tokenizer.json`` (``tokenizers``) or a sentencepiece model.

The umT5 tokenizer a user has is either the Hugging Face ``google/umt5-xxl`` folder that Wan
ships (``tokenizer.json``, ``spiece.model``, ...) or a bare ``spiece.model``. Both give the same
ids: sentencepiece pieces, then EOS ``</s>``; padding with ``<pad>`` (id 0) to a fixed length;
truncation keeps the EOS. Prompts are cleaned first as Wan does (HTML unescaped twice, runs of
whitespace collapsed; ``ftfy.fix_text`` too when ftfy is installed).
"""

from __future__ import annotations

import html
import os
import re
from typing import Sequence

import numpy as np

_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model")


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning ('whitespace' mode): fix text, unescape HTML, collapse whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class Tokenizer:
    """Fixed-length tokenizer: ``__call__(texts, max_length) -> (ids, mask)``, int32 [b, L].

    Built by ``load_tokenizer``; wraps either a ``tokenizers.Tokenizer`` or a
    ``sentencepiece.SentencePieceProcessor``.
    """

    def __init__(self, backend, kind: str, path: str, clean: bool = True):
        self.backend, self.kind, self.path, self.clean = backend, kind, path, clean
        if kind == "tokenizers":
            self.pad_id = _first_id(backend, ("<pad>", "[PAD]"), 0)
            self.eos_id = _first_id(backend, ("</s>", "[SEP]", "<eos>"), None)
            # A tokenizer.json without a post-processor does not add EOS; T5's does.
            self._adds_eos = backend.post_processor is not None
        else:
            self.pad_id = backend.pad_id() if backend.pad_id() >= 0 else 0
            self.eos_id = backend.eos_id() if backend.eos_id() >= 0 else None
            self._adds_eos = False

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce."""
        if self.kind == "tokenizers":
            return self.backend.get_vocab_size(with_added_tokens=True)
        return self.backend.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Ids of one text, with EOS, untruncated."""
        text = clean_prompt(text) if self.clean else text
        if self.kind == "tokenizers":
            ids = list(self.backend.encode(text).ids)
        else:
            ids = list(self.backend.encode(text))
        if not self._adds_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def __call__(self, texts: str | Sequence[str], max_length: int = 512):
        """Ids and attention mask padded/truncated to ``max_length``: ([b, L], [b, L]) int32.

        Truncation keeps the final EOS (as transformers' T5 tokenizers do).
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        ids = np.full((len(texts), max_length), self.pad_id, np.int32)  # [b, L]
        mask = np.zeros((len(texts), max_length), np.int32)  # [b, L]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"prompt {i} is {type(text).__name__}, expected str")
            row = self.encode(text)
            if len(row) > max_length:
                tail = [row[-1]] if self.eos_id is not None else []  # keep the closing EOS
                row = row[:max_length - len(tail)] + tail
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return ids, mask


def _first_id(tok, names, default):
    for name in names:
        idx = tok.token_to_id(name)
        if idx is not None:
            return idx
    return default


def load_tokenizer(path: str, clean: bool = True) -> Tokenizer:
    """Loads a tokenizer from a local ``tokenizer.json``, a sentencepiece ``.model``, or a
    directory holding one of them (``tokenizer.json`` preferred).

    Raises FileNotFoundError naming the path and the files expected when nothing is there.
    """
    if os.path.isdir(path):
        found = [n for n in _TOKENIZER_FILES if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise FileNotFoundError(
                f"no tokenizer in {path}: expected one of {list(_TOKENIZER_FILES)} (the umT5 "
                "tokenizer folder, e.g. google/umt5-xxl from the Wan 2.1 release)")
        path = os.path.join(path, found[0])
    elif not os.path.isfile(path):
        raise FileNotFoundError(
            f"tokenizer not found: {path} (expected a tokenizer.json, a sentencepiece .model "
            f"file, or a directory holding one of {list(_TOKENIZER_FILES)})")
    if path.endswith(".json"):
        from tokenizers import Tokenizer as HFTokenizer  # the .json format's own library

        try:
            backend = HFTokenizer.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"{path}: not a valid tokenizers JSON file ({e})") from None
        backend.no_padding()
        backend.no_truncation()
        return Tokenizer(backend, "tokenizers", path, clean)
    if path.endswith(".model"):
        try:
            import sentencepiece as spm
        except ImportError:
            raise ImportError(f"{path} is a sentencepiece model; reading it needs the "
                              "'sentencepiece' package (pip install sentencepiece), or pass "
                              "the tokenizer.json beside it") from None
        backend = spm.SentencePieceProcessor()
        try:
            backend.Load(path)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path}: not a valid sentencepiece model ({e})") from None
        return Tokenizer(backend, "sentencepiece", path, clean)
    raise ValueError(f"{path}: unknown tokenizer file type; expected tokenizer.json or a "
                     "sentencepiece .model")
