"""Packed repeats: n seeds of one model trained as one packed model, each replica computing
what a separate :func:`archlab.train.fit` with its seed computes.

Each replica is built by :func:`archlab.model.build_model` with its own seed (the same initial
weights, exactly), then the replicas' parameters and buffers are stacked along a new first
dimension. A stack of Dense layers (an MLP) runs its replicas as batched matrix products with a
written-out backward pass (:class:`DensePlan`, ``archlab/dense_plan.py``, which a single run's
MLP step uses too); any other model calls one
template module under :func:`torch.func.vmap` (``_model.py``). The trainer is ``_fit.py``. Per
replica, as in a separate run:

- shuffling: its own ``torch.Generator(seed)`` permutation per epoch;
- dropout: its own generator, seeded as ``execute_run`` seeds the global one, drawing the same
  masks in the same forward order (``Dropout``, ``SpatialDropout2D``: bit-identical masks);
- the loss: cross-entropy plus its own L2/L1 regularization; the packed loss is the sum of the
  replicas' losses, so each replica's gradient is its own (replicas share no parameter);
- BatchNormalization: batch statistics and running statistics per replica (vmap updates each
  replica's slice of the stacked buffers);
- ``clipnorm``: the norm over the replica's own gradients; ``max_norm`` constraints per
  replica;
- the optimizer: one torch optimizer over the stacked parameters. Every optimizer archlab has
  (SGD, momentum, Nesterov, Adam, AMSGrad, Adadelta, RMSprop, Adagrad, Nadam) updates element
  by element, with a step count and learning rate that all replicas share (Keras 2 ``decay``
  included), so each replica's slice gets exactly its own update.

Arithmetic is batched (vmap's batched matmul and conv), so results agree with separate runs to
float rounding, not bit for bit. What cannot be packed (:func:`pack_blocker`): early stopping
(replicas would stop at different epochs), GaussianNoise (its noise stream cannot be split per
replica), activity regularizers (their penalty is kept on the layer), and any training option
this module does not know.
"""

from archlab.dense_plan import DensePlan, SingleDensePlan
from archlab.packed._fit import fit_packed
from archlab.packed._model import PackedModel, pack_blocker

__all__ = ["DensePlan", "PackedModel", "SingleDensePlan", "fit_packed", "pack_blocker"]
