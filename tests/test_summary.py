"""summary(): per-layer shapes, counts and FLOPs without running the model."""

import jax
import jax.numpy as jnp
import pytest

import nnfun as nf


def test_summary_rows_shapes_counts_and_flops():
    model = nf.Sequential({"hidden": nf.Dense(16), "act": jax.nn.relu, "out": nf.Dense(3)})
    table = nf.summary(model, jax.ShapeDtypeStruct((4, 8), jnp.float32))
    rows = {row.path: row for row in table.rows}
    assert [r.path for r in table.rows] == ["<root>", "hidden", "act", "out"]
    assert rows["hidden"].output == "(4, 16) float32"
    assert rows["hidden"].params == 8 * 16 + 16
    assert table.total_params == 8 * 16 + 16 + 16 * 3 + 3
    # XLA counts a multiply-add as 2 FLOPs; the bias add adds one per output.
    assert rows["hidden"].flops == pytest.approx(2 * 4 * 8 * 16 + 4 * 16, rel=0.05)
    assert rows["out"].flops == pytest.approx(2 * 4 * 16 * 3 + 4 * 3, rel=0.05)
    text = str(table)
    assert "hidden" in text and "Dense" in text and "(4, 3) float32" in text


@pytest.mark.parametrize("remat", [False, True])
def test_summary_counts_every_copy_of_a_stack(remat):
    # XLA's cost analysis counts a loop body once; summary costs a Stack unrolled.
    x = jax.ShapeDtypeStruct((2, 8), jnp.float32)
    stack = nf.Stack(4, nf.Dense(8), remat=remat)
    one_copy = 2 * 2 * 8 * 8 + 2 * 8  # closed form, as in the test above
    assert nf.summary(stack, x).total_flops == pytest.approx(4 * one_copy, rel=0.05)
    # ... without changing how the Stack itself traces outside summary.
    params, state = stack.init(jax.random.key(0), jnp.zeros((2, 8)))
    text = jax.jit(stack.apply).lower(params, state, jnp.zeros((2, 8))).as_text()
    assert "while" in text


def test_summary_counts_every_time_step_of_an_rnn():
    # The RNN's scan over time is costed unrolled too: every step's recurrent product.
    batch, time, features, hidden = 2, 30, 4, 8
    x = jax.ShapeDtypeStruct((batch, time, features), jnp.float32)
    rnn = nf.RNN(nf.SimpleRNN(hidden))
    # Closed form: inputs projected in one product (+ bias), then per step h @ U and
    # the add of the projected input (tanh counts as a transcendental, not a FLOP).
    project = 2 * batch * time * features * hidden + batch * time * hidden
    recur = time * (2 * batch * hidden * hidden + batch * hidden)
    assert nf.summary(rnn, x).total_flops == pytest.approx(project + recur, rel=0.02)
    params, state = rnn.init(jax.random.key(0), jnp.zeros((batch, time, features)))
    text = jax.jit(rnn.apply).lower(params, state, jnp.zeros((batch, time, features))).as_text()
    assert "while" in text  # outside summary the RNN still runs as a loop


def test_summary_nests_paths_parent_first():
    model = nf.Sequential({"block": nf.Residual(nf.Dense(4))})
    paths = [r.path for r in nf.summary(model, jnp.zeros((2, 4))).rows]
    assert paths == ["<root>", "block", "block/layer"]


def test_summary_raises_shape_errors_with_path():
    model = nf.Sequential({"block": nf.Residual(nf.Dense(5))})
    with pytest.raises(nf.LayerError, match="block"):
        nf.summary(model, jnp.zeros((2, 4)))
