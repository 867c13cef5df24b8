"""Runnable examples: ``python -m nnfun.examples.mnist1d --help``."""
