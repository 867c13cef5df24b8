"""nnfun.data.number_translation and its Vocabulary: splits, ids, padding, decoding, errors."""

import sys

import numpy as np
import pytest

import nnfun.data as nd
from nnfun.data import Vocabulary, _translation

SPLITS = ("train", "valid", "test")
SMALL = dict(numbers=(0, 2000), sizes=(300, 50, 50))


@pytest.fixture(scope="module")
def german():
    return nd.number_translation("de", seed=3, **SMALL)


def test_known_translations():
    pairs = nd.number_translation("de", numbers=(97, 98), sizes=(1, 0, 0)).train
    assert pairs["source_text"].tolist() == ["97"]
    assert pairs["target_text"].tolist() == ["siebenundneunzig"]
    french = nd.number_translation("fr", source="words", numbers=(97, 98), sizes=(1, 0, 0))
    assert french.train["source_text"].tolist() == ["ninety-seven"]
    assert french.train["target_text"].tolist() == ["quatre-vingt-dix-sept"]
    big = nd.number_translation("fr", numbers=(1234, 1235), sizes=(1, 0, 0)).train
    assert big["target_text"].tolist() == ["mille deux cent trente-quatre"]


def test_same_seed_same_data_other_seed_other_split(german):
    again = nd.number_translation("de", seed=3, **SMALL)
    for split in SPLITS:
        for name, array in getattr(german, split).items():
            np.testing.assert_array_equal(array, getattr(again, split)[name], err_msg=name)
    assert again.target_vocab == german.target_vocab
    other = nd.number_translation("de", seed=4, **SMALL)
    assert not np.array_equal(other.test["numbers"], german.test["numbers"])


def test_splits_hold_disjoint_numbers_from_the_range(german):
    numbers = [set(getattr(german, split)["numbers"].tolist()) for split in SPLITS]
    assert [len(n) for n in numbers] == [300, 50, 50]
    assert not (numbers[0] & numbers[1] or numbers[0] & numbers[2] or numbers[1] & numbers[2])
    assert all(0 <= n < 2000 for n in set.union(*numbers))


def test_shapes_dtypes_and_common_widths(german):
    widths = {(german.train[k].shape[1]) for k in ("target_inputs", "target_outputs")}
    for split in SPLITS:
        arrays = getattr(german, split)
        n = len(arrays["numbers"])
        assert arrays["source"].shape == (n, german.train["source"].shape[1])
        assert {arrays[k].shape[1] for k in ("target_inputs", "target_outputs")} == widths
        for name in ("source", "source_lengths", "target_inputs", "target_outputs"):
            assert arrays[name].dtype == np.int32, name
        assert arrays["target_lengths"].dtype == np.int32
    longest = max(len(t) for s in SPLITS for t in getattr(german, s)["target_text"])
    assert widths == {longest + 1}  # characters + BOS (or EOS)


def test_padding_bos_eos_placement(german):
    pad, bos, eos = Vocabulary.pad_id, Vocabulary.bos_id, Vocabulary.eos_id
    assert (pad, bos, eos) == (0, 1, 2)
    arrays = german.train
    for i in range(len(arrays["numbers"])):
        text, length = arrays["target_text"][i], arrays["target_lengths"][i]
        inputs, outputs = arrays["target_inputs"][i], arrays["target_outputs"][i]
        assert length == len(text) + 1
        assert inputs[0] == bos and outputs[length - 1] == eos
        assert (inputs[length:] == pad).all() and (outputs[length:] == pad).all()
        assert (inputs[1:length] == outputs[: length - 1]).all()  # teacher forcing shift
        assert not np.isin(outputs[: length - 1], [pad, bos, eos]).any()
        source_length = arrays["source_lengths"][i]
        assert source_length == len(arrays["source_text"][i])
        assert (arrays["source"][i, source_length:] == pad).all()
        assert (arrays["source"][i, :source_length] > eos).all()


@pytest.mark.parametrize(
    "settings",
    [
        dict(lang="de"),
        dict(lang="fr", source="words"),
        dict(lang="fr", source="words", level="word"),
        dict(lang="de", level="word", shared_vocab=True),
    ],
)
def test_decode_encode_round_trip(settings):
    data = nd.number_translation(**settings, numbers=(0, 10**6), sizes=(200, 0, 100), seed=1)
    for split in (data.train, data.test):
        for vocab, ids, texts in (
            (data.source_vocab, split["source"], split["source_text"]),
            (data.target_vocab, split["target_outputs"], split["target_text"]),
            (data.target_vocab, split["target_inputs"], split["target_text"]),
        ):
            assert vocab.decode_batch(ids) == texts.tolist()
            for text in texts[:20]:
                assert vocab.decode(vocab.encode(text)) == text


def test_word_level_tokens():
    vocab = Vocabulary.from_texts(["mille deux cent trente-quatre", "1234"], level="word")
    assert vocab.split("mille deux cent trente-quatre") == [
        "mille", "deux", "cent", "trente", "-", "quatre"
    ]  # fmt: skip
    assert vocab.split("1234") == ["1", "2", "3", "4"]
    english = Vocabulary.from_texts(["one thousand, two hundred"], level="word")
    assert english.decode(english.encode("one thousand, two hundred")) == (
        "one thousand, two hundred"
    )


def test_shared_vocabulary_is_one_object():
    data = nd.number_translation("fr", shared_vocab=True, numbers=(0, 100), sizes=(50, 0, 10))
    assert data.source_vocab is data.target_vocab
    assert {"0", "q", "-"} <= set(data.source_vocab.tokens)


def test_fit_data_layout(german):
    batch = german.fit_data("valid")
    assert sorted(batch) == ["x", "y"]
    assert sorted(batch["x"]) == ["decoder_inputs", "decoder_lengths", "inputs", "lengths"]
    assert batch["y"] is german.valid["target_outputs"]
    assert batch["x"]["decoder_inputs"] is german.valid["target_inputs"]
    with pytest.raises(ValueError, match="'train', 'valid' or 'test'"):
        german.fit_data("validation")
    assert len(nd.Batches(german.fit_data("train"), batch_size=32)) == 300 // 32


def test_repr_is_a_summary(german):
    text = repr(german)
    assert text.startswith("TranslationData(lang='de', train=300, valid=50, test=50, source=4")
    assert "array" not in text and len(text) < 200


def test_decode_stops_at_eos_and_checks_ids():
    vocab = Vocabulary(("a", "b"))
    assert vocab.decode([1, 3, 4, 2, 3, 3]) == "ab"
    assert vocab.decode(np.array([3, 0, 4])) == "ab"  # PAD skipped
    with pytest.raises(ValueError, match="decode_batch"):
        vocab.decode(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        vocab.decode([3, 7])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("abc")


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(lang="es"), r"lang must be one of \('de', 'fr'\)"),
        (dict(source="roman"), "source must be one of"),
        (dict(level="bpe"), "level must be one of"),
        (dict(numbers=(10, 10)), "0 <= low < high"),
        (dict(numbers=(-5, 10)), "0 <= low < high"),
        (dict(sizes=(10, 10)), r"\(train, valid, test\)"),
        (dict(sizes=(0, 1, 1)), "train >= 1"),
        (dict(numbers=(0, 100), sizes=(80, 20, 10)), "holds 100 numbers, fewer than the 110"),
        (dict(seed=-1), "seed must be a non-negative int"),
    ],
)
def test_bad_settings_raise(settings, message):
    with pytest.raises(ValueError, match=message):
        nd.number_translation(**settings)


def test_missing_num2words_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "num2words", None)
    _translation._spell.cache_clear()
    with pytest.raises(ImportError, match=r'pip install "nnfun\[data\]"'):
        nd.number_translation(numbers=(0, 3), sizes=(1, 1, 1))
    _translation._spell.cache_clear()
