"""Stand-ins for the public release's text and image encoders, and the smooth test videos, that
benchmarks/release_golden.py runs the release with (the tests use the same functions; see
tests/inference/test_release_golden.py)."""
from __future__ import annotations

import types

import numpy as np
import torch

TEXT_LEN = 8


# ------------------------------------------------------------------ fixed text / image encoders
class FixedPrompter:
    """Stands in for WanPrompter: prompt -> a stored [1, TEXT_LEN, text_dim] embedding."""

    table: dict = {}
    dtype = torch.float32  # what the text encoder would hand the pipeline

    def __init__(self, *args, **kwargs):
        pass

    def encode_prompt(self, prompt, positive=True, device=None):
        prompt = prompt[0] if isinstance(prompt, (list, tuple)) else prompt
        return torch.from_numpy(self.table[prompt])[None].to(self.dtype)  # [1, L, text_dim]


def prompt_embedding(prompt: str, text_dim: int) -> np.ndarray:
    """[TEXT_LEN, text_dim]: a seeded RNG of the prompt's length, zero rows past its words."""
    n = min(TEXT_LEN, len(prompt.split()))
    emb = np.zeros((TEXT_LEN, text_dim), np.float32)
    emb[:n] = np.random.default_rng(len(prompt)).standard_normal((n, text_dim))
    return emb


class FixedImageEncoder:
    """Stands in for WanImageEncoder: tokens = base + channel_means(image) @ proj."""

    def __init__(self, base: np.ndarray, proj: np.ndarray):
        self.base, self.proj = torch.from_numpy(base), torch.from_numpy(proj)
        weight = torch.zeros(1)  # encode_image reads the device of this weight
        self.model = types.SimpleNamespace(visual=types.SimpleNamespace(
            patch_embedding=types.SimpleNamespace(weight=weight)))
        self.seen = []

    def encode_image(self, images):
        x = torch.cat(list(images)).float()  # [b, 3, H, W] in [-1, 1]
        self.seen.append(x.permute(0, 2, 3, 1).numpy().copy())
        return self.base[None] + (x.mean(dim=(2, 3)) @ self.proj)[:, None]  # [b, 257, d]


def image_tokens(image_float: np.ndarray, base, proj) -> np.ndarray:
    """The same function in numpy: image [H, W, 3] in [-1, 1] -> [1, 257, d]."""
    return (base + image_float.reshape(-1, 3).mean(0) @ proj)[None].astype(np.float32)


# ---------------------------------------------------------------------------- test inputs
def smooth_video(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [F, H, W, 3]: a few moving colour waves in steps of 8 (small files, not trivial)."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    out = np.zeros((frames, height, width, 3))
    for c in range(3):
        for _ in range(3):
            ky, kx, kt, ph = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), \
                rng.uniform(0, 6.3)
            out[..., c] += np.sin(ky * y + kx * x + kt * t + ph)
    return (8 * np.round(np.clip(127.5 + 40.0 * out, 0, 255) / 8)).clip(0, 255).astype(np.uint8)


def video_tensor(u8: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> [1, 3, F, H, W] float as the release's loader makes it
    (ToTensor, then Normalize(0.5, 0.5))."""
    x = torch.from_numpy(u8).float().div(255.0)
    x = (x - 0.5) / 0.5
    return x.permute(3, 0, 1, 2)[None]
