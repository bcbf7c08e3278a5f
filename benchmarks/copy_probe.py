"""Can a DiT of a given size learn to read a reference at all? The identity-copy probe.

The small-scale reproduction's models never learned to use their camera / content references
(docs/results.md). This probe isolates that: a DiT (the small configs' size by default) is
trained from scratch, all parameters, on random smooth latents whose target IS the content
reference (frame-concatenated, as CamClone feeds it), so a model that reads the reference can
predict the clean target from any noise level. Every --log_every steps it prints the
clean-sample error at t = 0.95 with the reference and with the reference zeroed: the gap is what
the model has learned to take from the reference.

  python benchmarks/copy_probe.py [--steps 300] [--heads 4] [--dim 128] [--layers 4] \
      [--loss velocity|sample] [--lr 1e-3]

On the 2-core CPU (docs/results.md): with the small configs' size (1,344 tokens) the gap stays
at ~0 for 150-300 steps, whatever the loss or head count.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import optax

from camclone_jax.diffusion import flow
from camclone_jax.models import DiT, DiTConfig
from camclone_jax.models import params as params_lib

SHAPE = (4, 4, 16, 28, 48)  # batch, latent frames, h, w, channels (13 x 64 x 112, 4x4 pixels)


def make_batch(key):
    """Smooth random latents x [b, f, h, w, C] (the target and the content reference), noise
    z and uniform t [b]."""
    k1, k2, k3 = jax.random.split(key, 3)
    x = jax.random.normal(k1, SHAPE)
    x = (x + jnp.roll(x, 1, 2) + jnp.roll(x, 1, 3)) / 1.7  # neighbouring tokens correlate
    return x, jax.random.normal(k2, SHAPE), jax.random.uniform(k3, (SHAPE[0],))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=("velocity", "sample"), default="velocity",
                   help="flow loss on the velocity, or squared error of the clean sample")
    p.add_argument("--log_every", type=int, default=50)
    args = p.parse_args(argv)
    c = SHAPE[-1]
    cfg = DiTConfig(dim=args.dim, ffn_dim=4 * args.dim, num_layers=args.layers,
                    num_heads=args.heads, in_channels=2 * c + 4, out_channels=c, text_dim=32,
                    freq_dim=64, patch_size=(1, 2, 2), prediction="sample")
    model, params = DiT(cfg), params_lib.init_params(cfg, 0)
    tx = optax.adam(args.lr)
    opt = tx.init(params)
    first_frame = jnp.zeros(SHAPE[:-1] + (cfg.cond_channels,))  # T2V-style: no first frame
    text = jnp.zeros((SHAPE[0], 8, 32))

    def loss_fn(p, x, z, t, content, loss):
        xt = flow.add_noise(x, z, t)  # [b, f, h, w, C]
        v = model.apply({"params": p}, xt, flow.model_timesteps(t), text,
                        cam_latents=jnp.zeros_like(x), content_latents=content,
                        first_frame=first_frame)
        if loss == "velocity":
            return flow.flow_loss(v, x, z)
        x_hat = xt - jnp.maximum(t, 0.05)[:, None, None, None, None] * v  # clean sample
        return jnp.mean((x_hat - x) ** 2)

    @jax.jit
    def step(p, o, key):
        x, z, t = make_batch(key)
        value, grads = jax.value_and_grad(loss_fn)(p, x, z, t, x, args.loss)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    @jax.jit
    def probe(p):
        x, z, _ = make_batch(jax.random.key(99))
        t = jnp.full((SHAPE[0],), 0.95)
        return (loss_fn(p, x, z, t, x, "sample"),
                loss_fn(p, x, z, t, jnp.zeros_like(x), "sample"))

    key, start = jax.random.key(0), time.time()
    print(f"{SHAPE[1] * SHAPE[2] * SHAPE[3] * 3 // 4} tokens, dim {args.dim}, {args.heads} heads, "
          f"{args.layers} layers, {args.loss} loss, lr {args.lr}")
    for i in range(args.steps + 1):
        key, sub = jax.random.split(key)
        params, opt, value = step(params, opt, sub)
        if i % args.log_every == 0:
            with_ref, without = probe(params)
            print(f"step {i}: loss {float(value):.3f} | clean-sample error at t=0.95: with the "
                  f"reference {float(with_ref):.3f}, without {float(without):.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
