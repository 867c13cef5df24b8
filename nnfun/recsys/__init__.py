"""Recommendation: implicit-feedback losses and ranking metrics.

Losses (one value per example, as in Optax): :func:`bpr_loss` and
:func:`sampled_softmax_loss` (in-batch negatives with the log-Q correction, on
``optax.losses.ranking_softmax_loss``). Metrics over the whole catalogue, one
value per user, excluding items seen in training: :func:`recall_at_k`,
:func:`ndcg_at_k`, :func:`hit_rate_at_k`, with :func:`top_k_items`; and
:func:`rmse` for rating prediction. The layers (``EmbeddingBag``,
``CrossNetwork``, ``FactorizationMachine``) are in ``nnfun.layers``, the models
in ``nnfun.models.recsys`` and the data in ``nnfun.data.movielens100k``.
"""

from ._losses import bpr_loss as bpr_loss
from ._losses import sampled_softmax_loss as sampled_softmax_loss
from ._metrics import hit_rate_at_k as hit_rate_at_k
from ._metrics import ndcg_at_k as ndcg_at_k
from ._metrics import popularity_scores as popularity_scores
from ._metrics import recall_at_k as recall_at_k
from ._metrics import rmse as rmse
from ._metrics import top_k_items as top_k_items
