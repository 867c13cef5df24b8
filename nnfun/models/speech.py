"""Speech models: a CTC acoustic model and a keyword classifier on the same front end.

Both take ``{"inputs": audio, "lengths": samples}``: ``(batch, samples)`` float
audio at 16 kHz and the real samples of each utterance (a bare array means no
padding). The front end (log-mel, per-utterance normalisation, SpecAugment in
training) is part of the model, so it runs under ``jit`` with the rest. Frame
lengths follow from sample lengths in closed form (the front end's
``frame_lengths``, then ``ceil(n / stride)`` per strided convolution):
:class:`CTCModel` returns them beside its logits, ``{"logits": (batch, frames,
classes), "lengths": (batch,)}``, which is what ``nnfun.train.ctc()`` takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ..core._children import apply_child, init_child, split_inputs
from ..core._layer import Layer, Params, State, layer_error, spec_of
from ..core._masks import sequence_mask
from ..data._speech import SPEECH_ALPHABET
from ..layers import (
    GRU,
    RNN,
    BatchNorm,
    Bidirectional,
    Conv,
    Dense,
    Dropout,
    MelSpectrogram,
    SpecAugment,
    UtteranceNorm,
)
from ..train._ctc import ctc
from ..train._losses import softmax_cross_entropy

#: Classes of the CTC model: the blank (0), then ``nnfun.data.SPEECH_ALPHABET``.
CHAR_CLASSES = len(SPEECH_ALPHABET) + 1
# A stage's kind: 0 reads the frame lengths; k >= 1 divides the frames by k (a stride).
_READS_FRAMES, _PLAIN = 0, 1


class _Relu(Layer):
    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        return jax.nn.relu(x), state


class SpeechEncoder(Layer):
    """Log-mel front end, strided 1-D convolutions with BatchNorm, bidirectional GRUs.

    Args:
        front_end: a spectral layer (``nf.MelSpectrogram``, ``nf.MFCC``).
        augment: a ``nf.SpecAugment`` applied in training, or None.
        channels: output channels of each convolution (kernel ``kernel_size``).
        strides: the time stride of each convolution.
        rnn_features: features of each GRU direction.
        rnn_layers: stacked bidirectional GRUs.
        dropout: before each GRU.

    Padded frames are zeroed after each convolution block and skipped by the
    GRUs; BatchNorm's statistics include the zeroed frames of a padded batch.

    Shapes: ``{"inputs": (batch, samples), "lengths": (batch,)}`` ->
    ``{"features": (batch, frames, 2 * rnn_features), "lengths": (batch,) frames}``.
    """

    front_end: Any = MelSpectrogram(n_mels=40)
    augment: Any = SpecAugment(freq_masks=2, freq_width=6, time_masks=2, time_width=8)
    channels: tuple[int, ...] = (128, 128)
    strides: tuple[int, ...] = (2, 1)
    kernel_size: int = 5
    rnn_features: int = 128
    rnn_layers: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(
                f"{type(self).__name__}: kernel_size must be odd, got {self.kernel_size}"
            )
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(
                f"{type(self).__name__}: channels {self.channels} and strides {self.strides} "
                "need one entry per convolution (at least one)"
            )

    @property
    def extras(self) -> frozenset[str]:
        return frozenset({"lengths"})

    def frame_lengths(self, lengths: Any) -> Any:
        """Output frames for ``lengths`` samples (an int or an int array)."""
        frames = self.front_end.frame_lengths(lengths)
        for s in self.strides:
            frames = (frames + s - 1) // s
        return frames

    def stages(self) -> list[tuple[str, Layer, int]]:
        """``(name, layer, kind)`` in order: kind 0 reads the frame lengths, >= 1 is a stride."""
        stages: list[tuple[str, Layer, int]] = [("norm", UtteranceNorm(), _READS_FRAMES)]
        if self.augment is not None:
            stages.append(("augment", self.augment, _READS_FRAMES))
        for i, (c, s) in enumerate(zip(self.channels, self.strides, strict=True)):
            # Explicit symmetric padding: "SAME" with a stride pads by an amount that depends
            # on the padded length, which would shift a padded utterance's frames.
            half = self.kernel_size // 2
            conv = Conv(c, (self.kernel_size,), strides=s, padding=((half, half),), use_bias=False)
            stages += [(f"conv{i}", conv, s), (f"batch_norm{i}", BatchNorm(), _PLAIN)]
            stages.append((f"relu{i}", _Relu(), _PLAIN))
        for i in range(self.rnn_layers):
            stages.append((f"dropout{i}", Dropout(self.dropout), _PLAIN))
            gru = Bidirectional(RNN(GRU(self.rnn_features)))
            stages.append((f"gru{i}", gru, _READS_FRAMES))
        return stages

    def _unpack(self, x: Any) -> tuple[Any, Any]:
        audio, extras = split_inputs(self, x)
        shape = tuple(jnp.shape(audio))
        if len(shape) != 2:
            raise layer_error(
                self,
                f"expected audio (batch, samples), got shape {shape}. Fix: audio[None] for one "
                "utterance; pad several into one array and pass their 'lengths'.",
            )
        lengths = extras.get("lengths")
        if lengths is None:
            return audio, jnp.full(shape[:1], shape[1], jnp.int32)
        sequence_mask(self, extras, shape[0], shape[1])  # checks shape, dtype and range
        return audio, lengths

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        audio, _ = self._unpack(x)
        h = jax.eval_shape(lambda a: self.front_end.apply({}, {}, a)[0], spec_of(audio))
        frames = jax.ShapeDtypeStruct(audio.shape[:1], jnp.int32)
        params: Params = {}
        state: State = {}
        for name, layer, kind in self.stages():
            extras = {"lengths": frames} if kind == _READS_FRAMES else {}
            p, s, h = init_child(name, layer, key, h, extras)
            params.update({name: p} if p else {})
            state.update({name: s} if s else {})
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        audio, lengths = self._unpack(x)
        h, _ = self.front_end.apply({}, {}, audio)
        frames = jnp.minimum(self.front_end.frame_lengths(jnp.asarray(lengths)), h.shape[1])
        new_state = dict(state)
        for name, layer, kind in self.stages():
            extras = {"lengths": frames} if kind == _READS_FRAMES else {}
            p, s = params.get(name, {}), state.get(name, {})
            h, s = apply_child(name, layer, p, s, h, key, train, extras)
            new_state.update({name: s} if s else {})
            if kind > 1:
                frames = jnp.minimum((frames + kind - 1) // kind, h.shape[1])
            if isinstance(layer, _Relu):  # after BatchNorm: zero the padded frames again
                mask = jnp.arange(h.shape[1])[None, :] < frames[:, None]
                h = h * mask[:, :, None].astype(h.dtype)
        return {"features": h, "lengths": frames.astype(jnp.int32)}, new_state


class CTCModel(Layer):
    """A CTC acoustic model: :class:`SpeechEncoder`, then a linear head over characters + blank.

    Args:
        encoder: the :class:`SpeechEncoder`.
        classes: output classes, the blank (0) included.

    Shapes: ``{"inputs": (batch, samples), "lengths": (batch,)}`` ->
    ``{"logits": (batch, frames, classes), "lengths": (batch,) frames}``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from nnfun.models.speech import CTCModel, SpeechEncoder
        >>> model = CTCModel(SpeechEncoder(channels=(8,), strides=(2,), rnn_features=8,
        ...                                rnn_layers=1))
        >>> x = {"inputs": jnp.zeros((2, 8000)), "lengths": jnp.array([8000, 4000])}
        >>> params, state = model.init(jax.random.key(0), x)
        >>> y, _ = model.apply(params, state, x)
        >>> y["logits"].shape, y["lengths"].tolist()
        ((2, 26, 17), [26, 13])
    """

    encoder: Any = SpeechEncoder()
    classes: int = CHAR_CLASSES

    @property
    def extras(self) -> frozenset[str]:
        return frozenset({"lengths"})

    def frame_lengths(self, lengths: Any) -> Any:
        """Output frames for ``lengths`` samples."""
        return self.encoder.frame_lengths(lengths)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        p, s, h = init_child("encoder", self.encoder, key, x)
        head, _, _ = init_child("head", Dense(self.classes), key, h["features"])
        return {"encoder": p, "head": head}, ({"encoder": s} if s else {})

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        enc_state = state.get("encoder", {})
        h, s = apply_child("encoder", self.encoder, params["encoder"], enc_state, x, key, train)
        features = h["features"]
        batch, frames, width = features.shape
        logits, _ = apply_child(
            "head", Dense(self.classes), params["head"], {}, features.reshape(-1, width), key, train
        )
        logits = logits.reshape(batch, frames, self.classes)
        return {"logits": logits, "lengths": h["lengths"]}, ({"encoder": s} if s else {})


class KeywordClassifier(Layer):
    """A keyword (one word per utterance) classifier: encoder, mean over real frames, linear.

    Args:
        encoder: the :class:`SpeechEncoder`.
        classes: the keywords.

    Shapes: ``{"inputs": (batch, samples), "lengths": (batch,)}`` -> ``(batch, classes)``.
    """

    encoder: Any = SpeechEncoder(rnn_layers=1)
    classes: int = 10

    @property
    def extras(self) -> frozenset[str]:
        return frozenset({"lengths"})

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        p, s, h = init_child("encoder", self.encoder, key, x)
        pooled = jax.ShapeDtypeStruct((h["features"].shape[0], h["features"].shape[2]), jnp.float32)
        head, _, _ = init_child("head", Dense(self.classes), key, pooled)
        return {"encoder": p, "head": head}, ({"encoder": s} if s else {})

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        enc_state = state.get("encoder", {})
        h, s = apply_child("encoder", self.encoder, params["encoder"], enc_state, x, key, train)
        # Padded frames are zero, so their sum over time counts only real frames.
        count = jnp.maximum(h["lengths"], 1).astype(h["features"].dtype)
        pooled = h["features"].sum(1) / count[:, None]
        logits, _ = apply_child("head", Dense(self.classes), params["head"], {}, pooled, key, train)
        return logits, ({"encoder": s} if s else {})


@dataclasses.dataclass(frozen=True)
class SpeechRecipe:
    """A speech model and how to train it.

    Attributes:
        name: ``"ctc"`` or ``"keyword"``.
        model: the layer.
        loss: ``fn(outputs, targets)`` giving per-utterance losses.
        steps: optimizer steps.
        batch_size: utterances per step.
        learning_rate: peak of a warm-up + cosine schedule.
    """

    name: str
    model: Layer
    loss: Any
    steps: int
    batch_size: int
    learning_rate: float

    def optimizer(self, steps: int | None = None) -> optax.GradientTransformation:
        """Adam with gradient clipping, a linear warm-up over 5% of the steps, cosine decay."""
        steps = self.steps if steps is None else steps
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, self.learning_rate, max(1, steps // 20), max(2, steps), self.learning_rate / 50
        )
        return optax.chain(optax.clip_by_global_norm(5.0), optax.adam(schedule))


def ctc_recipe() -> SpeechRecipe:
    """The CTC model of ``python -m nnfun.examples.speech`` with its training settings.

    Example:
        >>> from nnfun.models.speech import ctc_recipe
        >>> ctc_recipe().model.classes
        17
    """
    return SpeechRecipe("ctc", CTCModel(), ctc(per_label=True), 1000, 32, 2e-3)


def keyword_recipe() -> SpeechRecipe:
    """A keyword classifier for single spoken digits (``spoken_digits(max_digits=1)``).

    The targets are the digits (0-9); the loss is softmax cross-entropy.
    """
    return SpeechRecipe("keyword", KeywordClassifier(), softmax_cross_entropy, 600, 32, 2e-3)
