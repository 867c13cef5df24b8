"""Ready-made models with training recipes (``nnfun.models.mnist1d.RECIPES``)."""
