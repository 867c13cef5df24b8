"""A Vision Transformer: patch embedding, class token, pre-norm encoder, classification head.

``ViT`` maps images ``(batch, height, width, channels)`` (channels last) to
``{"hidden": (batch, 1 + patches, d_model), "pooled": (batch, d_model),
"logits": (batch, num_classes)}``: a strided convolution cuts the image into
``patch_size`` squares and embeds each, a learned class token goes first,
learned positions are added, a :class:`nnfun.Stack` of pre-norm non-causal
:class:`nnfun.TransformerBlock` s and a final LayerNorm follow. The head reads
the normalised class token; the optional pooler (Hugging Face ``ViTModel``'s)
is ``tanh`` of a Dense layer on it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child
from ..core._combinators import Sequential
from ..core._layer import Layer, Params, State, child_key, layer_error
from ..core._stack import Stack
from ..layers._conv import Conv
from ..layers._dense import Dense
from ..layers._dropout import Dropout
from ..layers._norm import LayerNorm
from ..layers._position import LearnedPositions
from ..layers._transformer import TransformerBlock
from .gpt import block_stack


class ViT(Layer):
    """Vision Transformer (Dosovitskiy et al. 2021); the defaults are ViT-B/16's.

    Args:
        image_size: height and width of the (square) images.
        patch_size: height and width of each patch; must divide ``image_size``.
        channels: channels of the images.
        d_model: model width (Hugging Face's ``hidden_size``).
        num_heads: attention heads (must divide ``d_model``).
        num_layers: transformer blocks.
        mlp_features: the feed-forward hidden width (``intermediate_size``);
            default ``4 * d_model``.
        num_classes: classes of the head (a Dense layer on the class token), or
            None for no head and no ``"logits"``.
        pooler: add the pooler (``tanh(Dense(class token))``) and its ``"pooled"`` output.
        dropout: on the embeddings, the residual branches, the attention
            weights and the MLP's hidden layer (in training).
        activation: the feed-forward activation (``"gelu"``, exact, is ViT's).
        epsilon: the LayerNorms' epsilon.
        stacked: blocks in a :class:`nnfun.Stack` (one ``lax.scan``); False
            unrolls them in a ``Sequential``.
        remat: recompute block activations in the backward pass (Stack only).

    Shapes: float ``(batch, image_size, image_size, channels)`` ->
    ``{"hidden": (batch, 1 + (image_size // patch_size) ** 2, d_model),
    "pooled": (batch, d_model), "logits": (batch, num_classes)}``, each of the
    last two only with its setting. Params: ``patches`` (a Conv, kernel
    ``(patch, patch, channels, d_model)``), ``class_token`` ``(d_model,)``,
    ``positions``, ``blocks``, ``norm``, ``pooler``, ``head``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models import ViT
        >>> model = ViT(image_size=8, patch_size=4, channels=3, d_model=16, num_heads=2,
        ...             num_layers=1, num_classes=5)
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        >>> out, _ = model.apply(params, state, jnp.ones((2, 8, 8, 3)))
        >>> out["hidden"].shape, out["logits"].shape
        ((2, 5, 16), (2, 5))
    """

    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    mlp_features: int | None = None
    num_classes: int | None = None
    pooler: bool = False
    dropout: float = 0.0
    activation: str = "gelu"
    epsilon: float = 1e-12
    stacked: bool = True
    remat: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels", "d_model", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViT {name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViT: patch_size={self.patch_size} does not divide image_size="
                f"{self.image_size}; the patches must tile the image. Fix: resize the "
                "images or pick a patch size that divides their size."
            )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"ViT: num_heads={self.num_heads} does not divide d_model={self.d_model}; "
                "pick a head count that divides the model width"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"ViT num_classes must be >= 1 or None, got {self.num_classes!r}")
        _ = self.block, self._blocks()

    @property
    def num_patches(self) -> int:
        """Patches per image: ``(image_size // patch_size) ** 2``."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def block(self) -> TransformerBlock:
        """One encoder block: pre-norm, non-causal self-attention and an MLP."""
        return TransformerBlock(
            self.num_heads,
            dropout=self.dropout,
            causal=False,
            norm_first=True,
            activation=self.activation,
            epsilon=self.epsilon,
            mlp_features=self.mlp_features or 4 * self.d_model,
        )

    def _blocks(self) -> Stack | Sequential:
        # Unrolled as GPT's: every block compiled up to 12 blocks without remat.
        return block_stack(self.block, self.num_layers, self.stacked, self.remat)

    def _layers(self) -> dict[str, Layer]:
        patch = (self.patch_size, self.patch_size)
        return {
            "patches": Conv(self.d_model, patch, strides=patch, padding="VALID"),
            "positions": LearnedPositions(self.num_patches + 1),
            "embedding_dropout": Dropout(self.dropout),
            "blocks": self._blocks(),
            "norm": LayerNorm(epsilon=self.epsilon),
        }

    def _check(self, images: Any) -> None:
        size, channels = self.image_size, self.channels
        expected = (size, size, channels)
        if isinstance(images, dict):
            raise layer_error(
                self, f"expected an array of images, got a dict with keys {sorted(images)}"
            )
        shape = tuple(images.shape)
        if len(shape) == 4 and shape[1:] == expected and jnp.issubdtype(images.dtype, jnp.floating):
            return
        hint = "Fix: pass float images (batch, height, width, channels), channels last."
        if len(shape) == 4 and shape[1] == channels and shape[3] != channels:
            hint = "Fix: these look channels-first; use images.transpose(0, 2, 3, 1)."
        elif len(shape) == 4 and shape[3] == channels:
            bad = [s for s in shape[1:3] if s % self.patch_size]
            hint = (
                f"Fix: resize the images to {size}x{size}"
                + (f"; {bad} is not divisible by patch_size={self.patch_size}" if bad else "")
                + " (the learned positions are for that grid)."
            )
        raise layer_error(
            self,
            f"expected images (batch, {size}, {size}, {channels}) of floats, got "
            f"{images.dtype} {shape}. {hint}",
        )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        layers = self._layers()
        params: Params = {}
        params["patches"], _, h = init_child("patches", layers["patches"], key, x)
        tokens = jax.ShapeDtypeStruct((h.shape[0], self.num_patches + 1, self.d_model), h.dtype)
        params["class_token"] = 0.02 * jax.random.normal(
            child_key(key, "class_token"), (self.d_model,), jnp.float32
        )
        params["positions"], _, _ = init_child("positions", layers["positions"], key, tokens)
        params["blocks"], _, h = init_child("blocks", layers["blocks"], key, tokens)
        params["norm"], _, _ = init_child("norm", layers["norm"], key, h)
        first = jax.ShapeDtypeStruct((h.shape[0], self.d_model), h.dtype)
        if self.pooler:
            params["pooler"], _, _ = init_child("pooler", Dense(self.d_model), key, first)
        if self.num_classes is not None:
            params["head"], _, _ = init_child("head", Dense(self.num_classes), key, first)
        return params, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        self._check(x)
        layers = self._layers()

        def run(name: str, layer: Layer, h: Any) -> Any:
            return apply_child(name, layer, params.get(name, {}), {}, h, key, train)[0]

        h = run("patches", layers["patches"], x)
        h = h.reshape(h.shape[0], self.num_patches, self.d_model)
        first = jnp.broadcast_to(
            params["class_token"].astype(h.dtype), (h.shape[0], 1, self.d_model)
        )
        h = jnp.concatenate([first, h], axis=1)
        for name in ("positions", "embedding_dropout", "blocks", "norm"):
            h = run(name, layers[name], h)
        out = {"hidden": h}
        if self.pooler:
            out["pooled"] = jnp.tanh(run("pooler", Dense(self.d_model), h[:, 0]))
        if self.num_classes is not None:
            out["logits"] = run("head", Dense(self.num_classes), h[:, 0])
        return out, state
