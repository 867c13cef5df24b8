# %% [markdown]
# # Translation: spelling numbers in French with an encoder-decoder
#
# The source is a number's digits, the target its French spelling ("97" ->
# "quatre-vingt-dix-sept"): the model has to reorder and compound. We train a small
# `EncoderDecoder` for a minute, decode held-out numbers with greedy and beam
# search, and look at where the decoder's cross-attention looks. The pairs are
# generated with `num2words` (LGPL-2.1, called unmodified); nothing is downloaded.
# The full recipe is `python -m nnfun.examples.translate --lang fr`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import nnfun as nf
from nnfun import data as nd
from nnfun.models.decoding import beam_search, greedy_search
from nnfun.models.seq2seq import EncoderDecoder

data = nd.number_translation("fr", numbers=(0, 1000), sizes=(800, 100, 100), seed=0)
print(data)
print(data.train["source_text"][:3], data.train["target_text"][:3])

# %% [markdown]
# ## Model and training
#
# `fit_data` lays a split out as the model's extras: the source with its
# `lengths`, the teacher-forced `decoder_inputs` (BOS + target) with their
# `decoder_lengths`, and the targets (target + EOS) as `y`. The loss ignores
# padding and smooths the labels.

# %%
model = EncoderDecoder(
    source_vocab_size=data.source_vocab.size,
    target_vocab_size=data.target_vocab.size,
    d_model=64, num_heads=4, num_encoder_layers=1, num_decoder_layers=1,
    max_source_length=data.train["source"].shape[1],
    max_target_length=data.train["target_outputs"].shape[1],
)
steps = 600
schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 60, steps)
state, history = nf.fit(
    model, nf.sequence_cross_entropy(label_smoothing=0.1), optax.adamw(schedule),
    data.fit_data("train"), steps=steps, batch_size=64, seed=0, steps_per_call=10,
    metrics={"exact_match": nf.exact_match()}, progress=False,
)
params = state.params
plt.plot(history["train"]["step"], history["train"]["loss"])
plt.xlabel("step"); plt.ylabel("training loss");

# %% [markdown]
# ## Greedy and beam search
#
# Both decoders are one `jax.jit` each: the sources are encoded once, then a
# `lax.while_loop` feeds one token per step through the decoder's KV cache.

# %%
test, vocab = data.test, data.target_vocab
source = {"inputs": test["source"], "lengths": test["source_lengths"]}
ids = dict(max_length=test["target_outputs"].shape[1], bos_id=vocab.bos_id, eos_id=vocab.eos_id)
greedy = vocab.decode_batch(np.asarray(greedy_search(model, params, source, **ids)[0]))
beams, scores = beam_search(model, params, source, beam_width=4, **ids)
beam = vocab.decode_batch(np.asarray(beams[:, 0]))
for i in range(6):
    print(f"{test['source_text'][i]:>5}  greedy {greedy[i]!r:32} beam {beam[i]!r:32} "
          f"want {str(test['target_text'][i])!r}")
greedy_match = np.mean([g == t for g, t in zip(greedy, test["target_text"])])
beam_match = np.mean([b == t for b, t in zip(beam, test["target_text"])])
print(f"held-out exact match: greedy {greedy_match:.2f}, beam 4 {beam_match:.2f}")

# %% [markdown]
# ## Where the cross-attention looks
#
# The layers compose, so we can recompute the decoder's cross-attention weights
# from its params with the public layers: encode the source, run the decoder block's
# self-attention sub-layer on the target prefix, then score its queries against the
# memory's keys.

# %%
def cross_attention_weights(params, source_ids, target_ids):
    memory = model.encode(params, source_ids[None])
    p = jax.tree.map(lambda a: a[0], params["decoder"]["layer"])  # the one decoder block
    h = params["target_embedding"]["embedding"][target_ids][None]
    h = h + params["target_positions"]["embedding"][None, : len(target_ids)]
    norm = nf.LayerNorm()
    h = h + nf.MultiHeadAttention(4, causal=True).apply(
        p["attention"], {}, norm.apply(p["attention_norm"], {}, h)[0])[0]
    q = norm.apply(p["cross_attention_norm"], {}, h)[0] @ p["cross_attention"]["query"]["kernel"]
    q = q + p["cross_attention"]["query"]["bias"]
    k = memory @ p["cross_attention"]["key"]["kernel"] + p["cross_attention"]["key"]["bias"]
    q, k = q.reshape(*q.shape[:2], 4, -1), k.reshape(*k.shape[:2], 4, -1)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(q.shape[-1])
    return jax.nn.softmax(logits, axis=-1)[0].mean(0)  # averaged over heads


i = 0
source_ids = test["source"][i, : test["source_lengths"][i]]
target_ids = test["target_inputs"][i, : test["target_lengths"][i]]
weights = cross_attention_weights(params, source_ids, target_ids)
fig, ax = plt.subplots(figsize=(4, 6))
ax.imshow(np.asarray(weights), cmap="viridis", aspect="auto")
ax.set_xticks(range(len(source_ids)), list(test["source_text"][i]))
ax.set_yticks(range(len(target_ids)), ["<s>", *vocab.split(test["target_text"][i])])
ax.set_xlabel("source digit"); ax.set_ylabel("target character (input)")
ax.set_title(test["target_text"][i]);

# %%
# The key result: a minute of training spells most held-out numbers exactly
# (0.93 greedy and beam on an AMD EPYC Zen 4, seed 0).
assert np.allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-5)
assert beam_match >= 0.7, beam_match
