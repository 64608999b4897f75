"""Keras 3 optimizers that update `redis_embedding.keras.Embedding` rows in Rust.

Each is the Keras optimizer of the same name: dense weights go through Keras's own update
unchanged. Each Embedding layer's gradient goes to one fused op per step, which sums the
gradients of duplicate ids, reads the slot rows (or takes them from the forward lookup),
applies the same arithmetic as Keras's `update_step` and writes rows and slots back.
Learning-rate schedules and the hyperparameters apply to both parts.

Rows are updated lazily (only ids in the batch), as in TFRA. Several workers may train one
table: with `rde_train_updates: "exact"` (the default) every step lands on the row as it
stands, so no worker's update is lost; `"last_writer_wins"` is TFRA's overwrite.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from redis_embedding.keras.layers import Embedding


def _layer(variable: Any) -> Optional[Embedding]:
    return getattr(variable, "_rde_layer", None)


class _RedisRows:
    """Mixin: splits anchors (Embedding layers) from dense weights."""

    _rde_kind = ""

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        raise NotImplementedError

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _rde_check(self) -> None:
        unsupported = [(n, getattr(self, n, None)) for n in
                       ("weight_decay", "global_clipnorm", "use_ema")]
        bad = [n for n, v in unsupported if v]
        if getattr(self, "gradient_accumulation_steps", None):
            bad.append("gradient_accumulation_steps")
        if getattr(self, "amsgrad", False):
            bad.append("amsgrad")
        if bad:
            raise ValueError(f"{type(self).__name__}: {', '.join(bad)} cannot be applied to "
                             "redis_embedding Embedding rows; unset it")

    def build(self, var_list: Sequence[Any]) -> None:
        dense = [v for v in var_list if _layer(v) is None]
        slots, inits = self._rde_slots()
        for v in var_list:
            layer = _layer(v)
            if layer is not None:
                self._rde_check()
                layer.use_slots(slots, inits)
        super().build(dense)  # type: ignore[misc]

    def apply(self, grads: Sequence[Any], trainable_variables: Optional[Sequence[Any]] = None
              ) -> None:
        if trainable_variables is None:
            return super().apply(grads, trainable_variables)  # type: ignore[misc]
        if not self.built:
            # Built on every variable, so the Embedding layers get configured (Keras would
            # build on the dense ones only, below).
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        dense_g, dense_v, sparse = [], [], []
        for g, v in zip(grads, trainable_variables):
            layer = _layer(v)
            if layer is None:
                dense_g.append(g)
                dense_v.append(v)
            elif g is None:
                raise ValueError(
                    f"Embedding {layer.name!r} got no gradient: call the model with "
                    "training=True under the GradientTape (model.fit does), or set the layer's "
                    "trainable = False if it is not meant to train")
            else:
                sparse.append((g, layer))
        if sparse:
            self._rde_check()
            lr = tf.cast(tf.convert_to_tensor(self._get_current_learning_rate()), tf.float64)
            step = tf.cast(tf.convert_to_tensor(self.iterations) + 1, tf.float64)
            # Clipping is Keras's per-variable clipping of the dense gradient, so it is applied
            # in the op, after duplicate ids are summed; loss-scale division comes first, per
            # position, as Keras divides the gradient's values.
            clip = tf.constant([float(self.clipvalue or 0.0), float(self.clipnorm or 0.0)],
                               tf.float64)
            hyper = tf.concat([self._rde_hyper(lr, step), clip], 0)
            scale = self.loss_scale_factor
            for g, layer in sparse:
                if not isinstance(g, tf.IndexedSlices):
                    raise TypeError(f"Embedding {layer.name!r}: its gradient must come from its "
                                    "training-mode call, got a dense tensor")
                values = g.values
                if scale is not None:
                    values = values / scale
                layer.apply_gradient(tf.IndexedSlices(values, g.indices, g.dense_shape),
                                     self._rde_kind, hyper)
        if dense_v:
            super().apply(dense_g, dense_v)  # type: ignore[misc]
        else:
            self._iterations.assign_add(1)


@keras.saving.register_keras_serializable(package="redis_embedding")
class SGD(_RedisRows, keras.optimizers.SGD):
    """`keras.optimizers.SGD` (momentum and nesterov included) for Redis rows too."""

    _rde_kind = "sgd"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return (["momentum"], [0.0]) if self.momentum != 0 else ([], [])

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step, tf.constant(float(self.momentum), tf.float64),
                         tf.constant(1.0 if self.nesterov else 0.0, tf.float64)])


@keras.saving.register_keras_serializable(package="redis_embedding")
class Adagrad(_RedisRows, keras.optimizers.Adagrad):
    """`keras.optimizers.Adagrad` for Redis rows too (slot `accumulator`)."""

    _rde_kind = "adagrad"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["accumulator"], [float(self.initial_accumulator_value)]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step, tf.constant(float(self.initial_accumulator_value), tf.float64),
                         tf.constant(float(self.epsilon), tf.float64)])


@keras.saving.register_keras_serializable(package="redis_embedding")
class Adam(_RedisRows, keras.optimizers.Adam):
    """`keras.optimizers.Adam` for Redis rows too (slots `m` and `v`, as TFRA names them)."""

    _rde_kind = "adam"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["m", "v"], [0.0, 0.0]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + [tf.constant(float(x), tf.float64)
                                      for x in (self.beta_1, self.beta_2, self.epsilon)])


__all__ = ["SGD", "Adagrad", "Adam"]
