"""`StatsCallback`: each `Embedding` layer's hit rate and latency percentiles in TensorBoard."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from redis_embedding.keras.layers import Embedding
from redis_embedding.stats import OPS, QUANTILES

# What tf.summary.scalar writes (TensorBoard's scalars plugin), without needing the
# tensorboard package that provides tf.summary.scalar.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)


class StatsCallback(keras.callbacks.Callback):
    """Writes, for each `redis_embedding.keras.Embedding` in the model, `<layer>/hit_rate`
    and `<layer>/<op>_<p50|p95|p99|max>_us` for each op it ran (see `RedisTable.stats()`)
    to a TensorBoard event file in `log_dir`: at the end of each epoch (step = epoch), or
    with `every_n_steps` every that many training batches (step = batches so far). The
    figures are cumulative since the layer's tables were opened."""

    def __init__(self, log_dir: str, every_n_steps: Optional[int] = None) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be None or >= 1, got {every_n_steps!r}")
        self.log_dir = str(log_dir)
        self.every_n_steps = every_n_steps
        self._writer: Optional[Any] = None
        self._steps = 0

    def _embeddings(self) -> List[Embedding]:
        """The model's Embedding layers, nested ones included, each once."""
        found: Dict[int, Embedding] = {}
        stack: List[Any] = [self.model]
        while stack:
            layer = stack.pop()
            if isinstance(layer, Embedding):
                found.setdefault(id(layer), layer)
            stack.extend(_children(layer))
        return list(found.values())

    def write(self, step: int) -> None:
        """Writes every Embedding layer's figures at `step` (the hooks below call this)."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for layer in self._embeddings():
                s = layer.stats()
                _scalar(f"{layer.name}/hit_rate", s["hit_rate"], step)
                for op in OPS:
                    if s.get(f"{op}_calls", 0) == 0:
                        continue
                    for fig, _ in QUANTILES:
                        name = f"{op}_{fig}_us"
                        _scalar(f"{layer.name}/{name}", s[name], step)
        self._writer.flush()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._steps += 1
        if self.every_n_steps is not None and self._steps % self.every_n_steps == 0:
            self.write(self._steps)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.every_n_steps is None:
            self.write(epoch)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _children(layer: Any) -> Iterator[Any]:
    """A layer's direct sublayers (Keras tracks them in `_layers`, models also in `layers`)."""
    seen = set()
    for attr in ("layers", "_layers"):
        for child in getattr(layer, attr, None) or ():
            if id(child) not in seen and child is not layer:
                seen.add(id(child))
                yield child


def _scalar(tag: str, value: float, step: int) -> None:
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR)
