"""Fingerprints of the compiled GPT training step and GRU step, to compare two checkouts.

Run ``python benchmarks/research/compiled_program.py [path/to/a/checkout]``
with each checkout (default: this one). Equal fingerprints mean XLA compiled
the same program (the same instructions, shapes and order), so the two run at
the same speed whatever the machine. Issue 14 used it to show that the
several-inputs convention (routing extras while tracing) costs nothing per step.
"""

import collections
import hashlib
import re
import sys

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])

import jax
import jax.numpy as jnp
import optax

import nnfun as nf
from nnfun.models.gpt import GPT


def fingerprint(fn, *args) -> str:
    """A hash of the compiled program's (shape, opcode) sequence, and its instruction count."""
    text = fn.lower(*args).compile().as_text()
    ops = re.findall(r"= (\S+) (\w[\w-]*)\(", text)
    counts = collections.Counter(op for _, op in ops)
    digest = hashlib.md5(str(ops).encode()).hexdigest()[:12]
    return f"{digest} ({len(ops)} instructions, {counts['fusion']} fusions)"


def main() -> None:
    model = GPT(vocab_size=96, d_model=128, num_heads=4, num_layers=4, max_length=128)
    ids = jnp.zeros((8, 128), jnp.int32)
    params, state = model.init(jax.random.key(0), ids)

    def loss(p, x, y):
        logits, _ = model.apply(p, state, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    rnn = nf.Sequential([nf.RNN(nf.GRU(128)), nf.Dense(10)])
    xs = jnp.zeros((32, 100, 40))
    rnn_params, rnn_state = rnn.init(jax.random.key(0), xs)

    def rnn_loss(p, x):
        padded = {"inputs": x, "lengths": jnp.full((32,), 100)}
        return rnn.apply(p, rnn_state, padded)[0].sum()

    print(f"nnfun from {nf.__file__}")
    print("GPT training step:", fingerprint(jax.jit(jax.value_and_grad(loss)), params, ids, ids))
    print("GRU step (lengths):", fingerprint(jax.jit(jax.grad(rnn_loss)), rnn_params, xs))


if __name__ == "__main__":
    main()
