"""Can a DiT of a given size learn to read a reference at all? The identity-copy probe.

The small-scale reproduction's models never learned to use their camera / content references
(docs/results.md). This probe isolates that: a DiT (the small configs' size by default) is
trained from scratch, all parameters, on random smooth latents whose target IS the content
reference (frame-concatenated, as CamClone feeds it; the camera reference is all zeros), so a
model that reads the reference can predict the clean target from any noise level. Every
--log_every steps it logs the clean-sample error at t = --probe_t with the reference and with
the reference zeroed ("no_content"): the gap is what the model has learned to take from the
reference. The training loop and measurement are shared with shift_probe.py (probe_lib.py).

  python benchmarks/copy_probe.py [--steps 300] [--heads 4] [--dim 128] [--layers 4] \\
      [--loss velocity|sample] [--lr 1e-3] [--out copy.jsonl]

On the 2-core CPU (docs/results.md): with the small configs' size (1,344 tokens) the gap stays
at ~0 for 150-300 steps, whatever the loss or head count.
"""
import argparse

import jax
import jax.numpy as jnp

import probe_lib

CASES = {"no_content": (False, True)}


def make_batch(key, shape):
    """Smooth random latents x [b, f, h, w, C]: the target and the content reference; the
    camera reference is zeros."""
    x = jax.random.normal(key, shape)
    x = (x + jnp.roll(x, 1, 2) + jnp.roll(x, 1, 3)) / 1.7  # neighbouring tokens correlate
    return x, jnp.zeros_like(x), x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The small configs' size: 4 latent frames of 16 x 28 x 48 (13 x 64 x 112 pixels, 4x4).
    probe_lib.add_args(p, steps=300, batch=4, frames=4, height=16, width=28, heads=4, layers=4,
                       loss="velocity", log_every=50)
    args = p.parse_args(argv)
    return probe_lib.train_probe(args, make_batch, CASES, {"task": "copy"})


if __name__ == "__main__":
    main()
