# Run: .venv/bin/python benchmarks/speech_step.py [--quick]  (PyTorch rows: torch==2.13.0)
"""Speech: log-mel front-end throughput and a CTC training step, nnfun vs naive JAX vs PyTorch.

Two measurements on 2-second utterances at 16 kHz (25 ms windows, 10 ms hop,
40 mel bands, log with a floor):

1. Front end alone, batch 32: ``nf.MelSpectrogram`` under ``jax.jit``; a naive
   JAX version (frames cut by one slice each, stacked, ``jnp.fft.rfft``, the
   filterbank product, jitted); PyTorch eager with ``torch.stft`` and the same
   filterbank. ``torchaudio``'s ``MelSpectrogram`` is not used: no torchaudio
   wheel installs beside torch 2.13, so the torch row is ``torch.stft`` + a
   matrix product, which is what torchaudio computes. Reported as seconds of
   audio per second.
2. A training step, batch 16: front end, per-utterance normalisation, one
   stride-2 convolution (kernel 5, 64 channels) with BatchNorm, one
   bidirectional GRU (64 per direction) skipping padded frames, a linear head
   over 17 classes, CTC loss per label, Adam. Contenders: ``nf.train_step`` on
   ``nnfun.models.speech.CTCModel`` (no SpecAugment or dropout); the same network
   hand-written in JAX (checked to give the same logits from the same weights);
   PyTorch eager (``Conv1d``, ``BatchNorm1d``, ``GRU`` over packed sequences,
   ``F.ctc_loss``, 2 threads or ``$TORCH_THREADS``; same sizes, its own weights).
   On a machine with more runnable threads than cores, torch's 2 worker
   threads spin and wait on each other: one loaded run measured 24 s per step
   with 2 threads against 1.15 s with 1, so compare with ``TORCH_THREADS=1`` there.

Rounds interleave the contenders in a rotated order; medians are reported.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps import measure, rounds_and_inner

import nnfun as nf
from nnfun.layers._audio import mel_filterbank
from nnfun.models.speech import CHAR_CLASSES, CTCModel, SpeechEncoder

RATE, SECONDS, N_FFT, HOP, MELS = 16000, 2.0, 400, 160, 40
FRONT_BATCH, STEP_BATCH, CHANNELS, HIDDEN, LABELS = 32, 16, 64, 64, 12
FILTERS = mel_filterbank(RATE, N_FFT, MELS)
WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def make_data(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = int(RATE * SECONDS)
    lengths = rng.integers(samples // 2, samples + 1, batch).astype(np.int32)
    lengths[0] = samples
    t = np.arange(samples) / RATE
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 900, (batch, 1)) * t[None, :])
    audio += 0.05 * rng.standard_normal((batch, samples))
    audio *= np.arange(samples)[None, :] < lengths[:, None]
    labels = rng.integers(1, CHAR_CLASSES, (batch, LABELS)).astype(np.int32)
    return {"audio": audio.astype(np.float32), "lengths": lengths, "labels": labels}


def naive_log_mel(audio: jax.Array) -> jax.Array:
    padded = jnp.pad(audio, ((0, 0), (N_FFT // 2, N_FFT // 2)))
    count = 1 + (padded.shape[1] - N_FFT) // HOP
    frames = jnp.stack([padded[:, i * HOP : i * HOP + N_FFT] for i in range(count)], axis=1)
    power = jnp.abs(jnp.fft.rfft(frames * WINDOW[None, None, :], axis=-1)) ** 2
    return jnp.log(jnp.maximum(power @ FILTERS, 1e-6))


def torch_log_mel(torch, audio):
    window = torch.from_numpy(WINDOW)
    spec = torch.stft(
        audio, N_FFT, HOP, window=window, center=True, pad_mode="constant", return_complex=True
    )
    power = spec.abs() ** 2  # (batch, freq, frames)
    mel = torch.from_numpy(FILTERS).T @ power
    return torch.log(torch.clamp(mel, min=1e-6)).transpose(1, 2)


def model() -> CTCModel:
    encoder = SpeechEncoder(
        augment=None,
        channels=(CHANNELS,),
        strides=(2,),
        rnn_features=HIDDEN,
        rnn_layers=1,
        dropout=0.0,
    )
    return CTCModel(encoder)


def raw_forward(p: dict, audio: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The CTC model written out in JAX: returns (logits, frame lengths) and BN statistics."""
    mel = naive_log_mel(audio)
    frames = 1 + lengths // HOP
    mask = (jnp.arange(mel.shape[1])[None, :] < frames[:, None])[:, :, None].astype(mel.dtype)
    count = jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    mean = (mel * mask).sum(1, keepdims=True) / count
    var = (((mel - mean) * mask) ** 2).sum(1, keepdims=True) / count
    x = (mel - mean) / jnp.sqrt(var + 1e-5) * mask
    y = jax.lax.conv_general_dilated(
        x, p["conv"], (2,), [(2, 2)], dimension_numbers=("NWC", "WIO", "NWC")
    )
    frames = (frames + 1) // 2
    mask = (jnp.arange(y.shape[1])[None, :] < frames[:, None])[:, :, None].astype(y.dtype)
    m, v = y.mean((0, 1)), y.var((0, 1))
    y = jax.nn.relu((y - m) / jnp.sqrt(v + 1e-5) * p["bn_scale"] + p["bn_bias"]) * mask
    forward = raw_gru(p["forward"], y, mask, reverse=False)
    backward = raw_gru(p["backward"], y, mask, reverse=True)
    h = jnp.concatenate([forward, backward], axis=-1)
    return h @ p["head_kernel"] + p["head_bias"], frames


def raw_gru(p: dict, x: jax.Array, mask: jax.Array, reverse: bool) -> jax.Array:
    def step(h, inputs):
        x_t, m_t = inputs
        xr, xz, xn = jnp.split(x_t @ p["input_kernel"] + p["bias"], 3, axis=-1)
        hr, hz, hn = jnp.split(h @ p["recurrent_kernel"] + p["recurrent_bias"], 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        new = (1.0 - z) * jnp.tanh(xn + r * hn) + z * h
        new = m_t * new + (1.0 - m_t) * h
        return new, new * m_t

    h0 = jnp.zeros((x.shape[0], HIDDEN), x.dtype)
    _, ys = jax.lax.scan(step, h0, (x.swapaxes(0, 1), mask.swapaxes(0, 1)), reverse=reverse)
    return ys.swapaxes(0, 1)


def raw_from_nnfun(params: dict) -> dict:
    enc = params["encoder"]
    return {
        "conv": enc["conv0"]["kernel"],
        "bn_scale": enc["batch_norm0"]["scale"],
        "bn_bias": enc["batch_norm0"]["bias"],
        "forward": enc["gru0"]["forward"]["cell"],
        "backward": enc["gru0"]["backward"]["cell"],
        "head_kernel": params["head"]["kernel"],
        "head_bias": params["head"]["bias"],
    }


def raw_loss(p: dict, batch: dict) -> jax.Array:
    logits, frames = raw_forward(p, batch["audio"], batch["lengths"])
    logit_pad = (jnp.arange(logits.shape[1])[None, :] >= frames[:, None]).astype(jnp.float32)
    label_pad = jnp.zeros(batch["labels"].shape, jnp.float32)
    loss = optax.ctc_loss(logits, logit_pad, batch["labels"], label_pad)
    return (loss / LABELS).mean()


def check_same_model(net: CTCModel, params: dict, state: dict, batch: dict) -> None:
    x = {"inputs": batch["audio"], "lengths": batch["lengths"]}
    ours, _ = jax.jit(lambda p: net.apply(p, state, x, train=True))(params)
    raw, frames = jax.jit(raw_forward)(raw_from_nnfun(params), batch["audio"], batch["lengths"])
    assert (np.asarray(ours["lengths"]) == np.asarray(frames)).all()
    for b, n in enumerate(np.asarray(frames)):
        np.testing.assert_allclose(ours["logits"][b, :n], raw[b, :n], rtol=1e-3, atol=1e-4)


def front_end_runs(audio_np: np.ndarray) -> dict:
    audio = jnp.asarray(audio_np)
    layer = nf.MelSpectrogram(n_fft=N_FFT, hop_length=HOP, n_mels=MELS)
    ours = jax.jit(lambda a: layer.apply({}, {}, a)[0])
    naive = jax.jit(naive_log_mel)
    expected = np.asarray(naive(audio))
    np.testing.assert_allclose(ours(audio), expected, rtol=1e-4, atol=1e-4)

    def runner(fn):
        def run(n):
            for _ in range(n):
                out = fn(audio)
            jax.block_until_ready(out)

        return run

    runs = {"raw JAX (naive)": runner(naive), "nnfun MelSpectrogram": runner(ours)}
    torch = _torch()
    if torch is not None:
        audio_t = torch.from_numpy(audio_np)
        got = torch_log_mel(torch, audio_t).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)

        def run_torch(n):
            with torch.no_grad():
                for _ in range(n):
                    torch_log_mel(torch, audio_t)

        runs["PyTorch eager (torch.stft)"] = run_torch
    return runs


def step_runs(data: dict) -> dict:
    net = model()
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    x = {"inputs": batch["audio"], "lengths": batch["lengths"]}
    targets = {"labels": batch["labels"], "lengths": jnp.full((STEP_BATCH,), LABELS, jnp.int32)}
    optimizer = optax.adam(1e-3)
    ts = nf.TrainState.create(net, optimizer, 0, x)
    check_same_model(net, ts.params, ts.state, batch)
    step = jax.jit(nf.train_step(net, nf.train.ctc(per_label=True), optimizer), donate_argnums=0)
    box = {"ts": ts}

    def run_nnfun(n):
        for _ in range(n):
            box["ts"], metrics = step(box["ts"], {"x": x, "y": targets})
        jax.block_until_ready(metrics)

    raw_params = raw_from_nnfun(ts.params)

    @jax.jit
    def raw_step(p, opt_state):
        loss, grads = jax.value_and_grad(raw_loss)(p, batch)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    raw_box = {"carry": (raw_params, optimizer.init(raw_params))}

    def run_raw(n):
        for _ in range(n):
            *carry, loss = raw_step(*raw_box["carry"])
            raw_box["carry"] = tuple(carry)
        jax.block_until_ready(loss)

    runs = {"raw JAX (naive)": run_raw, "nnfun train_step": run_nnfun}
    torch = _torch()
    if torch is not None:
        runs["PyTorch eager"] = torch_step(torch, data)
    return runs


def torch_step(torch, data: dict):
    nn = torch.nn
    torch.manual_seed(0)
    conv = nn.Conv1d(MELS, CHANNELS, 5, stride=2, padding=2, bias=False)
    norm = nn.BatchNorm1d(CHANNELS)
    gru = nn.GRU(CHANNELS, HIDDEN, batch_first=True, bidirectional=True)
    head = nn.Linear(2 * HIDDEN, CHAR_CLASSES)
    modules = [conv, norm, gru, head]
    optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-3)
    audio = torch.from_numpy(data["audio"])
    lengths = torch.from_numpy(data["lengths"].astype(np.int64))
    labels = torch.from_numpy(data["labels"].astype(np.int64))
    label_lengths = torch.full((STEP_BATCH,), LABELS, dtype=torch.long)

    def loss_fn():
        mel = torch_log_mel(torch, audio)  # (batch, frames, mels)
        frames = 1 + lengths // HOP
        mask = (torch.arange(mel.shape[1])[None, :] < frames[:, None]).float()[:, :, None]
        count = mask.sum(1, keepdim=True).clamp(min=1.0)
        mean = (mel * mask).sum(1, keepdim=True) / count
        var = (((mel - mean) * mask) ** 2).sum(1, keepdim=True) / count
        x = ((mel - mean) / torch.sqrt(var + 1e-5) * mask).transpose(1, 2)
        y = torch.relu(norm(conv(x))).transpose(1, 2)
        frames = (frames + 1) // 2
        packed = nn.utils.rnn.pack_padded_sequence(
            y, frames, batch_first=True, enforce_sorted=False
        )
        out, _ = gru(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=y.shape[1])
        log_probs = torch.log_softmax(head(h), -1).transpose(0, 1)
        loss = nn.functional.ctc_loss(log_probs, labels, frames, label_lengths, reduction="none")
        return (loss / LABELS).mean()

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss_fn().backward()
            optimizer.step()

    return run


def _torch():
    try:
        import torch
    except ImportError:
        print("(PyTorch not installed: pip install torch==2.13.0 for its rows)")
        return None
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    return torch


def table(medians: dict, base: str, unit: str, per_second: float | None = None) -> None:
    if per_second is None:
        print("| contender | ms / step | time vs raw JAX |\n|---|---:|---:|")
        for name, s in medians.items():
            print(f"| {name} | {1e3 * s:.1f} | {s / medians[base]:.2f}x |")
        return
    print(f"| contender | ms / batch | {unit} | time vs raw JAX |\n|---|---:|---:|---:|")
    for name, s in medians.items():
        print(f"| {name} | {1e3 * s:.2f} | {per_second / s:,.0f} | {s / medians[base]:.2f}x |")


def main() -> None:
    rounds, inner = rounds_and_inner(__doc__.splitlines()[0], 7, 10, quick=(2, 2))
    start = time.perf_counter()
    front = make_data(FRONT_BATCH)
    medians = measure(front_end_runs(front["audio"]), rounds, inner)
    print(
        f"\nLog-mel front end, batch {FRONT_BATCH} x {SECONDS:.0f} s at {RATE} Hz, "
        f"{jax.default_backend()}, median of {rounds} rounds x {inner} calls\n"
    )
    table(medians, "raw JAX (naive)", "s of audio / s", FRONT_BATCH * SECONDS)
    medians = measure(step_runs(make_data(STEP_BATCH, seed=1)), rounds, max(1, inner // 2))
    print(
        f"\nCTC training step (front end, conv + BatchNorm, BiGRU {HIDDEN}, CTC, Adam), batch "
        f"{STEP_BATCH} x {SECONDS:.0f} s, {jax.default_backend()}, median of {rounds} rounds\n"
    )
    table(medians, "raw JAX (naive)", "")
    print(f"\n({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
