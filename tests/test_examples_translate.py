"""A smoke run of the translation example with tiny settings: it learns, decodes, reports."""

import re

import pytest

from nnfun.examples import translate

LINE = re.compile(
    r"^translate: test exact-match (\d\.\d{3}), BLEU (\d+\.\d) \(lang=fr, beam=2, "
    r"greedy exact-match (\d\.\d{3}), char BLEU, seed=1, 150 steps, \d+ s on \w+\)$"
)


@pytest.mark.slow
def test_translate_example_trains_decodes_and_reports(capsys):
    args = "--lang fr --steps 150 --train-size 800 --test-size 60 --d-model 64 --layers 1"
    translate.main([*args.split(), "--beam", "2", "--seed", "1", "--no-progress"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = LINE.match(last)
    assert match, last
    beam, bleu, greedy = (float(g) for g in match.groups())
    assert 0.0 <= beam <= 1.0 and 0.0 <= greedy <= 1.0
    # 150 steps spell most characters right, though few whole numbers (measured ~40).
    assert bleu > 15.0, last
