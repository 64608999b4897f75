"""Keras 3 training over Redis, without TFRA (TensorFlow backend).

    import redis_embedding as rde
    emb = rde.keras.Embedding(64, config="redis.json", name="user_emb")
    model.compile(optimizer=rde.keras.optimizers.Adam(1e-3), loss="mse")

The layer keeps its rows in Redis; the optimizers update dense weights as Keras does and
embedding rows with one fused op per table and step (see docs/keras.md).
"""

from redis_embedding.keras import optimizers
from redis_embedding.keras.callbacks import StatsCallback
from redis_embedding.keras.layers import Embedding

__all__ = ["Embedding", "StatsCallback", "optimizers"]
