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

    # The global_clipnorm factor of the step being applied, while Keras's own apply of the
    # dense weights runs (see _clip_gradients).
    _rde_global_scale: Optional[tf.Tensor] = None

    def _rde_check(self) -> None:
        if getattr(self, "use_ema", False):
            raise ValueError(f"{type(self).__name__}: use_ema cannot be applied to "
                             "redis_embedding Embedding rows: the moving average would be a "
                             "second copy of every row ever trained, kept in this process; "
                             "unset it")

    def _rde_rows_only_step(self) -> None:
        """Advances what Keras's own update would have advanced in a step with no dense
        weights (besides `iterations`)."""

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
        accumulate = int(self.gradient_accumulation_steps or 0)
        # Keras's test for the last step of an accumulation cycle, which updates.
        update = (self._iterations + 1) % accumulate == 0 if accumulate else None
        global_scale = None
        if sparse:
            self._rde_check()
            lr = tf.cast(tf.convert_to_tensor(self._get_current_learning_rate()), tf.float64)
            step = tf.cast(tf.convert_to_tensor(self.iterations) + 1, tf.float64)
            own = self._rde_hyper(lr, step)
            cycle = [float(accumulate),
                     tf.cast(update, tf.float64) if update is not None else 0.0]
            steps = []
            for g, layer in sparse:
                if not isinstance(g, tf.IndexedSlices):
                    raise TypeError(f"Embedding {layer.name!r}: its gradient must come from its "
                                    "training-mode call, got a dense tensor")
                # Clipping is Keras's per-variable clipping of the dense gradient and weight
                # decay its decay of the variable, so both are applied in the op, after
                # duplicate ids are summed (and, under accumulation, averaged); loss-scale
                # division comes first, per position, as Keras divides the gradient's values.
                decay = self.weight_decay if self._use_weight_decay(layer._anchor) else None
                common = [float(self.clipvalue or 0.0), float(self.clipnorm or 0.0),
                          float(decay or 0.0)]
                values = g.values
                if self.loss_scale_factor is not None:
                    values = values / self.loss_scale_factor
                steps.append((layer, tf.IndexedSlices(values, g.indices, g.dense_shape),
                              common))
            if self.global_clipnorm and self.global_clipnorm > 0:
                rows_sq = [layer.grad_sq_norm(g, self._rde_kind, tf.concat(
                    [own, tf.constant(common + [0.0], tf.float64), tf.stack(
                        [tf.cast(c, tf.float64) for c in cycle])], 0))
                    for layer, g, common in steps]
                global_scale = self._rde_clip_scale(dense_g, dense_v, rows_sq, update)
            for layer, g, common in steps:
                hyper = tf.concat([own, tf.constant(common, tf.float64), tf.stack(
                    [tf.cast(global_scale, tf.float64) if global_scale is not None
                     else tf.constant(0.0, tf.float64)] + [tf.cast(c, tf.float64)
                                                           for c in cycle])], 0)
                layer.apply_gradient(g, self._rde_kind, hyper)
        if dense_v:
            self._rde_global_scale = global_scale
            try:
                super().apply(dense_g, dense_v)  # type: ignore[misc]
            finally:
                self._rde_global_scale = None
        else:
            if update is None:
                self._rde_rows_only_step()
            else:
                keras.ops.cond(update, self._rde_rows_only_step, lambda: None)
            self._iterations.assign_add(1)

    def _rde_clip_scale(self, dense_g: List[Any], dense_v: List[Any],
                        rows_sq: List[tf.Tensor], update: Optional[tf.Tensor]) -> tf.Tensor:
        """Keras's `clip_by_global_norm` factor over the dense gradients (unscaled and, on the
        last step of an accumulation cycle, averaged as Keras's apply will have them) and
        every layer's summed row gradients, whose squared norms Rust computed."""
        dense = []
        for g, v in zip(dense_g, dense_v):
            if g is None:
                continue
            g = tf.convert_to_tensor(g)
            if self.loss_scale_factor is not None:
                g = g / self.loss_scale_factor
            if update is not None:
                acc = self._accumulated_gradients[self._get_variable_index(v)]
                g = (g + acc) / self.gradient_accumulation_steps
            dense.append(tf.reduce_sum(tf.square(g)))
        total = tf.add_n(dense + [tf.cast(s, tf.float32) for s in rows_sq])
        norm = tf.sqrt(total)
        clip = self.global_clipnorm
        return clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)

    def _clip_gradients(self, grads: List[Any]) -> List[Any]:
        # Inside Keras's apply of the dense weights: global_clipnorm's factor spans the
        # Embedding rows too, so it was computed before (`_rde_clip_scale`).
        if self._rde_global_scale is not None:
            scale = self._rde_global_scale
            return [g if g is None else g * scale for g in grads]
        return super()._clip_gradients(grads)  # type: ignore[misc]


def _f64(*values: Any) -> List[tf.Tensor]:
    return [tf.constant(float(v), tf.float64) for v in values]


@keras.saving.register_keras_serializable(package="redis_embedding")
class SGD(_RedisRows, keras.optimizers.SGD):
    """`keras.optimizers.SGD` (momentum and nesterov included) for Redis rows too (slot `m`
    with momentum, as TFRA names it)."""

    _rde_kind = "sgd"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return (["m"], [0.0]) if self.momentum != 0 else ([], [])

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.momentum, 1.0 if self.nesterov else 0.0))


@keras.saving.register_keras_serializable(package="redis_embedding")
class Adagrad(_RedisRows, keras.optimizers.Adagrad):
    """`keras.optimizers.Adagrad` for Redis rows too (slot `accumulator`)."""

    _rde_kind = "adagrad"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["accumulator"], [float(self.initial_accumulator_value)]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.initial_accumulator_value, self.epsilon))


class _AdamRows(_RedisRows):
    """Adam's rows (AdamW is Adam with weight decay): slots `m`, `v`, and `vhat` with
    amsgrad, as TFRA names them."""

    _rde_kind = "adam"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return (["m", "v", "vhat"], [0.0] * 3) if self.amsgrad else (["m", "v"], [0.0] * 2)

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.beta_1, self.beta_2, self.epsilon,
                                          1.0 if self.amsgrad else 0.0))


@keras.saving.register_keras_serializable(package="redis_embedding")
class Adam(_AdamRows, keras.optimizers.Adam):
    """`keras.optimizers.Adam` (amsgrad included) for Redis rows too."""


@keras.saving.register_keras_serializable(package="redis_embedding")
class AdamW(_AdamRows, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` for Redis rows too: the decay applies to the batch's rows."""


@keras.saving.register_keras_serializable(package="redis_embedding")
class Ftrl(_RedisRows, keras.optimizers.Ftrl):
    """`keras.optimizers.Ftrl` for Redis rows too (slots `accumulator` and `linear`)."""

    _rde_kind = "ftrl"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["accumulator", "linear"], [float(self.initial_accumulator_value), 0.0]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(
            self.learning_rate_power, self.initial_accumulator_value,
            self.l1_regularization_strength, self.l2_regularization_strength,
            self.l2_shrinkage_regularization_strength, self.beta))


@keras.saving.register_keras_serializable(package="redis_embedding")
class RMSprop(_RedisRows, keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop` for Redis rows too (slots `velocity`, then `momentum` with
    momentum and `average_gradient` when centered)."""

    _rde_kind = "rmsprop"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        names = ["velocity"] + (["momentum"] if self.momentum > 0 else []) + (
            ["average_gradient"] if self.centered else [])
        return names, [0.0] * len(names)

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.rho, self.momentum, self.epsilon,
                                          1.0 if self.centered else 0.0))


@keras.saving.register_keras_serializable(package="redis_embedding")
class Adadelta(_RedisRows, keras.optimizers.Adadelta):
    """`keras.optimizers.Adadelta` for Redis rows too (slots `accumulated_grad` and
    `accumulated_delta_var`)."""

    _rde_kind = "adadelta"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["accumulated_grad", "accumulated_delta_var"], [0.0, 0.0]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.rho, self.epsilon))


@keras.saving.register_keras_serializable(package="redis_embedding")
class Adamax(_RedisRows, keras.optimizers.Adamax):
    """`keras.optimizers.Adamax` for Redis rows too (slots `m` and `u`, as TFRA names them)."""

    _rde_kind = "adamax"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["m", "u"], [0.0, 0.0]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.beta_1, self.beta_2, self.epsilon))


@keras.saving.register_keras_serializable(package="redis_embedding")
class Nadam(_RedisRows, keras.optimizers.Nadam):
    """`keras.optimizers.Nadam` for Redis rows too (slots `m` and `v`)."""

    _rde_kind = "nadam"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["m", "v"], [0.0, 0.0]

    def _u_product_next(self) -> tf.Tensor:
        """`u_product` as Keras's update of this step leaves it, in its float32."""
        dtype = self._u_product.dtype
        return self._u_product * self.beta_1 * (
            1.0 - 0.5 * keras.ops.power(0.96, keras.ops.cast(self.iterations + 1, dtype)))

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.beta_1, self.beta_2, self.epsilon) + [
            tf.cast(self._u_product_next(), tf.float64)])

    def _rde_rows_only_step(self) -> None:
        self._u_product.assign(self._u_product_next())


@keras.saving.register_keras_serializable(package="redis_embedding")
class Lion(_RedisRows, keras.optimizers.Lion):
    """`keras.optimizers.Lion` for Redis rows too (slot `m`)."""

    _rde_kind = "lion"

    def _rde_slots(self) -> Tuple[List[str], List[float]]:
        return ["m"], [0.0]

    def _rde_hyper(self, lr: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return tf.stack([lr, step] + _f64(self.beta_1, self.beta_2))


__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Ftrl", "RMSprop", "Adadelta", "Adamax", "Nadam",
           "Lion"]
