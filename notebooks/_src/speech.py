# %% [markdown]
# # Speech: spoken digit strings with a CTC recognizer
#
# The utterances ("three one four") are synthesized offline by eSpeak NG (GPL-3,
# shipped in the `espeakng-loader` wheel: `pip install "nnfun[speech]"`), in many
# voices, speaking rates and pitches, with added noise; the test voices are never
# heard in training. We look at a waveform and its log-mel spectrogram, train a
# small CTC model for about a minute, and compare greedy and beam-search
# decoding. The full recipe is `python -m nnfun.examples.speech`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import nnfun as nf
from nnfun import data as nd
from nnfun.examples import speech as example
from nnfun.models.speech import CTCModel, SpeechEncoder, ctc_recipe

data = nd.spoken_digits(1200, 100, max_digits=4, seed=1)
train, test = data["train"], data["test"]
print(len(train), "training and", len(test), "test utterances")
print("test voices:", sorted(set(test.voices))[:6], "...")

# %% [markdown]
# ## A waveform and its log-mel spectrogram
#
# `nf.MelSpectrogram` is a layer: pure JAX on `(batch, samples)` audio, 25 ms
# windows every 10 ms, 40 mel bands (Slaney scale), log with a floor.

# %%
audio = test.audio(0)
mel = nf.MelSpectrogram(n_mels=40)
log_mel, _ = mel.apply({}, {}, jnp.asarray(audio)[None])
fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5))
top.plot(np.arange(len(audio)) / 16000, audio, linewidth=0.5)
top.set_title(f'"{test.texts[0]}" ({test.voices[0]})'); top.set_xlabel("seconds")
bottom.imshow(np.asarray(log_mel[0]).T, origin="lower", aspect="auto")
bottom.set_xlabel("frame (10 ms)"); bottom.set_ylabel("mel band")
plt.tight_layout()

# %% [markdown]
# ## Training with CTC
#
# The model takes `{"inputs": audio, "lengths": samples}` and returns the
# character logits with their frame lengths; `nf.train.ctc()` is the loss on
# those and the padded labels. Each batch comes from one length bucket, so a
# single padded shape compiles here.

# %%
encoder = SpeechEncoder(channels=(64, 64), rnn_features=64, rnn_layers=1)
model = CTCModel(encoder)
recipe = ctc_recipe()
steps, widths = 250, [32000]
optimizer = recipe.optimizer(steps)
batches = example.training_batches(train, widths, 32, seed=0, keep=example.feasible(model, train))
first = next(batches)
ts = nf.TrainState.create(model, optimizer, 0, first["x"])
step = jax.jit(nf.train_step(model, recipe.loss, optimizer))
losses = []
for batch in [first] + [next(batches) for _ in range(steps - 1)]:
    ts, metrics = step(ts, batch)
    losses.append(float(metrics["loss"]))
plt.plot(losses); plt.xlabel("step"); plt.ylabel("CTC loss per label");

# %% [markdown]
# ## CTC posteriors over time
#
# Each column is one output frame (20 ms after the stride-2 convolution); the
# rows are the blank and the characters. The blank dominates, and each character
# fires in a short spike.

# %%
predict = jax.jit(lambda x: model.apply(ts.params, ts.state, x)[0])
one = example.as_batch(test, np.array([0]), widths[0])["x"]
out = predict(one)
n = int(out["lengths"][0])
posteriors = np.asarray(jax.nn.softmax(out["logits"][0, :n], axis=-1))
plt.figure(figsize=(9, 4))
plt.imshow(posteriors.T, aspect="auto", origin="lower", cmap="magma")
plt.yticks(range(len(nd.SPEECH_ALPHABET) + 1), ["_"] + [repr(c)[1:-1] for c in nd.SPEECH_ALPHABET])
plt.xlabel("output frame"); plt.title(f'reference: "{test.texts[0]}"');

# %% [markdown]
# ## Greedy against beam search
#
# Greedy decoding takes the best class per frame, merges repeats and drops
# blanks. Prefix beam search sums the probability of every path that collapses
# to the same characters, keeping the 8 best prefixes per frame.

# %%
greedy = example.transcribe(predict, test, widths)
beamed = example.transcribe(predict, test, widths, beam=8)
for ref, g, b in list(zip(test.texts, greedy, beamed))[:6]:
    print(f"{ref!r:32} greedy {g!r:32} beam {b!r}")
scores = {"greedy": example.scores(test.texts, greedy), "beam 8": example.scores(test.texts, beamed)}
for name, s in scores.items():
    print(f"{name:7} CER {s['cer']:.3f}  WER {s['wer']:.3f}  digit strings {s['accuracy']:.3f}")

# %%
# After a minute of training the model already transcribes unseen voices.
assert scores["greedy"]["cer"] < 0.35, scores
assert scores["beam 8"]["cer"] <= scores["greedy"]["cer"] + 0.02, scores
