"""Conditioning sources of the sampler: latent codecs, text embeddings and CLIP image tokens.

Codecs (``encode(frames [b, F, H, W, 3] in [-1, 1]) -> latents [b, f, h, w, C]``, ``decode``):
``VAECodec`` (the Wan VAE, tiled decode) and the pixel codec of ``camclone_jax.data.codec``,
picked by ``load_codec`` from a checkpoint's codec.json. Text sources (``embed(prompts) ->
[n, L, D]``, ``release()``): the JAX umT5 encoder (freed after encoding), a prompt cache, or
zeros for models trained without text. ``ClipImages``: CLIP ViT-H/14 tokens of an image.
"""

from __future__ import annotations

import abc
import gc
import os
from typing import Sequence

import jax
import numpy as np

from camclone_jax.convert.encoders import load_clip, load_t5
from camclone_jax.convert.vae import load_vae
from camclone_jax.data.codec import codec_from_dict
from camclone_jax.inference.prompts import PromptCache
from camclone_jax.models import clip, t5
from camclone_jax.models.tokenizer import load_tokenizer
from camclone_jax.models.vae import WanVAE

# ------------------------------------------------------------------------------------ codecs
class VAECodec:
    """The Wan VAE as a codec: posterior-mean encode, tiled (and chunked) decode."""

    def __init__(self, config, params, *, tiled: bool = True):
        self.vae, self.tiled = WanVAE(config), tiled
        self.params = jax.device_put(params)
        self.latent_channels = config.z_dim
        self.temporal_factor = config.temporal_factor
        self.spatial_factor = config.spatial_factor

    @classmethod
    def load(cls, path: str, *, tiled: bool = True) -> "VAECodec":
        """From any source ``camclone_jax.convert.vae.load_vae`` reads."""
        return cls(*load_vae(path), tiled=tiled)

    def encode(self, frames):
        return self.vae.encode(self.params, frames, tiled=self.tiled)  # [b, f, h, w, z]

    def decode(self, latents):
        return self.vae.decode(self.params, latents, tiled=self.tiled)  # [b, F, H, W, 3]


def _vae_codec(spec: dict, base_dir: str):
    if "path" not in spec:
        raise ValueError('codec.json of kind "vae" needs a "path" to the VAE weights')
    path = spec["path"] if os.path.isabs(spec["path"]) else os.path.join(base_dir, spec["path"])
    return VAECodec.load(path, tiled=spec.get("tiled", True))


def _pixel_codec(spec: dict, base_dir: str):
    return codec_from_dict(spec)  # PixelCodec(**fields), as the training export wrote them


CODECS = {"vae": _vae_codec, "pixel": _pixel_codec}  # codec.json "kind" -> factory


def load_codec(spec: dict, base_dir: str = "."):
    """A codec from a codec.json dict (see the module docstring)."""
    kind = spec.get("kind")
    if kind not in CODECS:
        raise ValueError(f"unknown codec kind {kind!r} in codec.json; known: {sorted(CODECS)}")
    return CODECS[kind](spec, base_dir)


# -------------------------------------------------------------------------------------- text
class TextSource(abc.ABC):
    """Prompts -> embeddings [n, text_len, dim] float32. ``guidance``: whether CFG is possible."""

    guidance = True

    @abc.abstractmethod
    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """Embeddings [len(prompts), text_len, dim] float32 of ``prompts``."""

    def release(self):
        """Frees whatever the source holds on the device (no-op by default)."""


class UMT5Text(TextSource):
    """The JAX umT5 encoder: loaded when prompts arrive, freed after them unless
    ``keep_loaded``; embeddings are remembered per prompt."""

    def __init__(self, t5_path: str, tokenizer_path: str, *, dtype: str = "float32",
                 max_length: int = 512, keep_loaded: bool = False):
        for what, path in (("umT5 weights (--t5)", t5_path), ("tokenizer (--tokenizer)",
                                                              tokenizer_path)):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{what} not found: {path}")
        self.t5_path, self.tokenizer_path = t5_path, tokenizer_path
        self.dtype, self.max_length, self.keep_loaded = dtype, max_length, keep_loaded
        self._model, self._memo = None, {}

    def embed(self, prompts):
        todo = [p for p in dict.fromkeys(prompts) if p not in self._memo]
        if todo:
            if self._model is None:
                cfg, params = load_t5(self.t5_path, dtype=self.dtype, param_dtype=self.dtype)
                self._model = (cfg, t5.prepare_params(cfg, params),
                               load_tokenizer(self.tokenizer_path))
            cfg, params, tok = self._model
            emb, _ = t5.encode_prompts(todo, tok, cfg, params, max_length=self.max_length)
            self._memo.update((p, np.asarray(e, np.float32)) for p, e in zip(todo, emb))
            if not self.keep_loaded:
                self.release()
        return np.stack([self._memo[p] for p in prompts])  # [n, L, dim]

    def release(self):
        self._model = None
        gc.collect()


class CachedText(TextSource):
    """Embeddings from a prompt cache built by ``python -m camclone_jax.encode_prompts``."""

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"prompt cache directory not found: {path}")
        self.cache = PromptCache(path)

    def embed(self, prompts):
        try:
            return self.cache.get_batch(list(prompts))  # [n, L, dim]
        except KeyError as e:
            raise ValueError(e.args[0]) from None


class NoText(TextSource):
    """Zero embeddings for a model trained without text (text.json kind "none")."""

    guidance = False

    def __init__(self, text_len: int, dim: int):
        self.text_len, self.dim = int(text_len), int(dim)

    def embed(self, prompts):
        return np.zeros((len(prompts), self.text_len, self.dim), np.float32)


class ClipImages:
    """CLIP image tokens for I2V-base models; weights loaded per use and freed after."""

    def __init__(self, path: str, dtype: str = "float32"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"CLIP image-encoder weights (--clip) not found: {path}")
        self.path, self.dtype = path, dtype

    def encode(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> [1, tokens, dim] float32."""
        cfg, params = load_clip(self.path, dtype=self.dtype, param_dtype=self.dtype)
        out = np.asarray(clip.encode_images(cfg, params, clip.preprocess_images(image, mode="wan")),
                         np.float32)  # [1, 257, dim]
        del params
        gc.collect()
        return out
