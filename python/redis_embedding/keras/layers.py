"""`Embedding`: a Keras 3 layer whose rows live in Redis, trained by the sparse optimizers in
`redis_embedding.keras.optimizers`.

How a step flows: the layer's forward op reads the rows of the batch's ids (and, once an
optimizer is attached, the optimizer's slot rows) and keeps them in Rust under a ticket. Its
output carries a custom gradient onto a one-element "anchor" weight: an `IndexedSlices` whose
values are the row gradients and whose indices name (ticket, position). The optimizer hands
that to the fused apply op, which sums duplicate ids, updates rows and slots and writes them
back. Dense weights never see any of this.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from redis_embedding._ops import ops as _lib
from redis_embedding.config import ConfigLike, RedisTableConfig
from redis_embedding.keras.init import init_spec
from redis_embedding.stats import Figure, combine
from redis_embedding.table import RedisTable

COMBINERS = ("sum", "mean", "sqrtn")
LAYOUTS = ("tfra", "fused")
KEY_DTYPES = ("int64", "int32", "string")

log = logging.getLogger("redis_embedding")


def _config(config: Union[None, str, ConfigLike]) -> RedisTableConfig:
    if config is None:
        return RedisTableConfig()
    if isinstance(config, str):
        return RedisTableConfig(redis_config_abs_dir=config)
    return RedisTableConfig(config.redis_config_abs_dir, config.redis_config_abs_dir_env)


@keras.saving.register_keras_serializable(package="redis_embedding")
class Embedding(keras.layers.Layer):
    """Maps int64, int32 or string ids to `dim`-float rows stored in Redis.

    Args:
      dim: row width.
      config: the JSON config's path, or a `RedisTableConfig` (TFRA's config object works
        too); None uses `$TFRA_REDIS_CONFIG_PATH`.
      name: the layer's name; the rows live in the table TFRA's Keras layer of that name uses
        (`<model_tag>:<name>-parameter{…}`) and the optimizer slots where TFRA's
        `DynamicEmbeddingOptimizer` keeps them, so a model trained with TFRA continues here.
      key_dtype: "int64", "int32" or "string".
      initializer: a Keras initializer (see `redis_embedding.keras.init.SUPPORTED`) for ids not
        yet in Redis; the row is drawn from (id, the initializer's seed), so every worker and
        rerun starts an id from the same row.
      combiner: None (one row per id), or "sum" / "mean" / "sqrtn" over the last id axis
        (multi-hot dense ids, `tf.RaggedTensor` or `tf.SparseTensor`).
      layout: "tfra" (params and each optimizer slot in its own table, as TFRA stores them) or
        "fused" (one table `<name>-fused` whose rows hold the params, then the slots: a
        training step reads and writes each distinct id once). None (the default) chooses
        when the layer is built: "tfra" if TFRA-layout rows of this name exist in Redis (a
        TFRA model continues; one line is logged), else "fused"; rows in both layouts are
        refused as ambiguous. The choice is the layer's `layout` from then on, and its
        config carries it, so a saved model keeps it. The fused row width depends on the
        optimizer: an empty fused table serves initializer rows at once, but stored fused
        rows are read only once the optimizer is built (`model.fit` and `model.evaluate`
        build it) or `fused_slots` records it for inference-only use.
    """

    def __init__(self, dim: int, config: Union[None, str, ConfigLike] = None,
                 name: Optional[str] = None, key_dtype: str = "int64",
                 initializer: Any = "uniform", combiner: Optional[str] = None,
                 layout: Optional[str] = None, fused_slots: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Embedding dim must be a positive int, got {dim!r}")
        if key_dtype not in KEY_DTYPES:
            raise ValueError(f"Embedding key_dtype must be one of {KEY_DTYPES}, got {key_dtype!r}")
        if combiner is not None and combiner not in COMBINERS:
            raise ValueError(f"Embedding combiner must be None or one of {COMBINERS}, "
                             f"got {combiner!r}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"Embedding layout must be None or one of {LAYOUTS}, "
                             f"got {layout!r}")
        self.dim = dim
        self.layout: Optional[str] = layout  # None until chosen (_chosen_layout)
        self.fused_slots = fused_slots
        self._fused_empty_checked = False  # an empty fused table serves before its optimizer
        self.key_dtype = key_dtype
        self.combiner = combiner
        self.redis_config = _config(config)
        self.initializer = keras.initializers.get(initializer)
        self._init_kind, self._init_params, self._seed = init_spec(self.initializer, dim)
        self.supports_jit = False  # custom ops: no XLA
        self._tables: Dict[str, RedisTable] = {}

    # Names as TFRA's Keras layer and DynamicEmbeddingOptimizer give them.
    @property
    def params_name(self) -> str:
        """The embedding name of the params table."""
        return f"{self.name}-parameter"

    def slot_table_name(self, slot: str) -> str:
        """The embedding name of optimizer slot `slot` (TFRA's naming)."""
        return f"{self.params_name}_DynamicEmbedding_{self.name}-shadow_{slot}"

    def _stored_rows(self, embedding_name: str, width: Optional[int] = None) -> int:
        """How many rows of `width` floats (default `dim`) the table `embedding_name` holds (a
        probe, not tracked). On Redis every width counts the same hashes; the memory backend
        keeps each width's rows apart."""
        with tf.init_scope():
            probe = RedisTable(key_dtype=tf.as_dtype(self.key_dtype), value_dtype=tf.float32,
                               default_value=tf.zeros([width or self.dim]), name=embedding_name,
                               config=self.redis_config, checkpoint=False)
            return int(probe.size().numpy())

    def _chosen_layout(self) -> str:
        """The layout, chosen on first use when none was given: TFRA's where only TFRA-layout
        rows of this name exist, so a model TFRA trained continues on them; else the fused
        one. Rows in both layouts are ambiguous and refused."""
        if self.layout is None:
            tfra_rows = self._stored_rows(self.params_name)
            fused_rows = self._fused_rows_stored(range(4)) if tfra_rows else 0
            if tfra_rows and fused_rows:
                raise ValueError(
                    f"Embedding {self.name!r}: Redis holds rows of this name in both layouts "
                    f"({tfra_rows} in {self.params_name!r}, TFRA's; {fused_rows} in "
                    f"{self.fused_name!r}, fused): pass layout=\"tfra\" or layout=\"fused\"")
            if tfra_rows:
                log.warning("Embedding %r: %d TFRA-layout rows of this name are in Redis, so it "
                            "uses layout=\"tfra\" to continue on them (pass layout= to choose)",
                            self.name, tfra_rows)
                self.layout = "tfra"
            else:
                self.layout = "fused"
        return self.layout

    def build(self, input_shape: Any = None) -> None:
        self._anchor = self.add_weight(name="rde_anchor", shape=(1,), initializer="zeros",
                                       trainable=True)
        self._anchor._rde_layer = self  # found by the optimizers
        if self._chosen_layout() == "fused" and self.fused_slots is not None:
            self._configure([], self.fused_slots, [0.0] * self.fused_slots)
        self.built = True

    def _configure(self, slot_names: List[str], fused_slots: int, inits: List[float]) -> None:
        """Records the slot layout on the handle table, eagerly even while a function is
        being traced, so the first step's lookup already reads the slots."""
        with tf.init_scope():
            _lib.tfra_rde_train_configure(self._handle.resource_handle, slot_names=slot_names,
                                          fused_slots=fused_slots, slot_inits=inits)

    @property
    def fused_name(self) -> str:
        """The embedding name of the fused table."""
        return f"{self.name}-fused"

    @property
    def table(self) -> RedisTable:
        """The params table, or with the fused layout the fused table, whose rows hold the
        params and then the optimizer's slots (opened on first use)."""
        if self._chosen_layout() == "fused":
            return self._table(self.fused_name, self.dim * (1 + self._fused_count()))
        return self._table(self.params_name)

    @property
    def _handle(self) -> RedisTable:
        """The table the training ops run on: the params table, or with the fused layout a
        handle of params width whose Rust side opens the wide table once configured."""
        if self._chosen_layout() == "fused":
            handle = self._table(self.fused_name, self.dim, checkpoint=False)
            # Its rows are the wide table's, which checkpoints carry: nothing to warn about.
            handle._warned_not_saved = True
            return handle
        return self._table(self.params_name)

    def _fused_count(self) -> int:
        if self.fused_slots is None:
            raise ValueError(
                f"Embedding {self.name!r} uses the fused layout, whose row width depends on the "
                "optimizer: build a redis_embedding.keras optimizer on the model first "
                "(model.fit does; in a custom loop call optimizer.build(model.trainable_variables)"
                "), or pass fused_slots=")
        return self.fused_slots

    def _fused_rows_stored(self, slot_counts: Sequence[int]) -> int:
        """The fused table's rows, as seen at the widths of these slot counts (the most)."""
        return max(self._stored_rows(self.fused_name, self.dim * (1 + k)) for k in slot_counts)

    def _check_inference_width(self) -> None:
        """Before its optimizer is built a fused layer does not know its row width. It can
        still serve an empty table (every row starts from the initializer, as with TFRA's
        layout); stored rows need the width, so they are refused by name."""
        if not self._fused_empty_checked:
            # Every optimizer keeps 0 to 3 slots; rows of params width alone read correctly.
            if self._fused_rows_stored((1, 2, 3)):
                self._fused_count()  # raises, naming the layer and what to do
            self._fused_empty_checked = True

    def slot_table(self, slot: str) -> RedisTable:
        """The table of optimizer slot `slot` (opened on first use)."""
        return self._table(self.slot_table_name(slot))

    def _table(self, embedding_name: str, width: Optional[int] = None,
               checkpoint: bool = True) -> RedisTable:
        """The table `embedding_name` with rows of `width` floats. A checkpoint (or SavedModel)
        carries its rows as `table_store_mode` says; handles that only run ops do not."""
        key = f"{embedding_name}:{width or self.dim}"  # string keys: SavedModel tracks them
        table = self._tables.get(key)
        if table is None:
            with tf.init_scope():
                table = RedisTable(key_dtype=tf.as_dtype(self.key_dtype), value_dtype=tf.float32,
                                   default_value=tf.zeros([width or self.dim]),
                                   name=embedding_name, config=self.redis_config,
                                   checkpoint=checkpoint)
            self._tables[key] = table
        return table

    def use_slots(self, slots: Sequence[str], inits: Sequence[float]) -> None:
        """Called by an optimizer when it is built: later training lookups also read these
        slot tables, so its apply needs no read of its own."""
        inits = [float(v) for v in inits]
        if self._chosen_layout() == "fused":
            if self.fused_slots is not None and self.fused_slots != len(slots):
                raise ValueError(
                    f"Embedding {self.name!r}: its fused rows hold {self.fused_slots} optimizer "
                    f"slots, but this optimizer keeps {len(slots)} ({', '.join(slots) or 'none'})"
                    "; use a new layer name for another optimizer")
            self.fused_slots = len(slots)
            self._configure([], len(slots), inits)
        else:
            self._configure([self.slot_table_name(s) for s in slots], 0, inits)

    def lookup(self, ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Rows of `ids` (any shape) as `ids.shape + [dim]`. With `training`, the rows are
        remembered for the optimizer and the result carries their gradient."""
        ids = tf.convert_to_tensor(ids)
        want = tf.as_dtype(self.key_dtype)
        if ids.dtype != want:
            if ids.dtype.is_integer and want.is_integer:
                ids = tf.cast(ids, want)
            else:
                raise TypeError(f"Embedding {self.name!r} has {self.key_dtype} keys; "
                                f"got ids of dtype {ids.dtype.name}")
        if self._chosen_layout() == "fused" and not training and self.fused_slots is None:
            self._check_inference_width()
        flat = tf.reshape(ids, [-1])
        values, _, ticket = _lib.tfra_rde_train_lookup(
            self._handle.resource_handle, flat, dim=self.dim, init=self._init_kind,
            init_params=list(self._init_params), seed=self._seed,
            fused_slots=self.fused_slots or 0, remember=training)
        if training:
            values = _attach(self._anchor.value, values, ticket)
        return tf.reshape(values, tf.concat([tf.shape(ids), [self.dim]], 0))

    def call(self, ids: Any, training: Optional[bool] = None) -> Any:
        # As for Keras's own layers, None is inference (serving signatures call so); fit
        # passes True, and a custom loop must too (the optimizer says so if it did not).
        train = self.trainable and bool(training)
        if isinstance(ids, tf.SparseTensor):
            ids = tf.RaggedTensor.from_sparse(ids)
        if isinstance(ids, tf.RaggedTensor):
            rows = ids.with_flat_values(self.lookup(ids.flat_values, train))
            if self.combiner is None:
                return rows
            return _combine(rows, self.combiner, ragged=True)
        rows = self.lookup(ids, train)
        return rows if self.combiner is None else _combine(rows, self.combiner, ragged=False)

    def compute_output_spec(self, ids: Any, training: Optional[bool] = None) -> Any:
        shape = tuple(ids.shape)
        if self.combiner is not None:
            shape = shape[:-1]
        return keras.KerasTensor(shape + (self.dim,), dtype="float32")

    def apply_gradient(self, grad: tf.IndexedSlices, optimizer: str, hyper: tf.Tensor
                       ) -> tf.Tensor:
        """Runs the fused optimizer op on this layer's rows (called by the optimizers)."""
        return _lib.tfra_rde_train_apply(
            self._handle.resource_handle, ids=grad.indices, grads=grad.values,
            hyper=hyper, optimizer=optimizer)

    def grad_sq_norm(self, grad: tf.IndexedSlices, optimizer: str, hyper: tf.Tensor
                     ) -> tf.Tensor:
        """The squared L2 norm of the row gradient `apply_gradient` would apply (duplicate ids
        summed; under accumulation the cycle's average), as float64: for `global_clipnorm`."""
        return _lib.tfra_rde_train_grad_norm(
            self._handle.resource_handle, ids=grad.indices, grads=grad.values,
            hyper=hyper, optimizer=optimizer)

    def stats(self) -> Dict[str, Figure]:
        """The statistics of this layer's tables combined (`RedisTable.stats()` names them):
        counters add up, each latency figure is the largest of its tables'. A training step
        counts once, as `train_lookup` (its keys, hits) and `train_apply` (rows written), on
        the handle table."""
        return combine(t.stats() for t in self._tables.values())

    def export(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """Every stored (id, params) pair; with the fused layout the slots are cut off."""
        keys, rows = self.table.export()
        return keys, rows[:, :self.dim]

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            "dim": self.dim,
            "config": {"redis_config_abs_dir": self.redis_config.redis_config_abs_dir,
                       "redis_config_abs_dir_env": self.redis_config.redis_config_abs_dir_env},
            "key_dtype": self.key_dtype,
            "initializer": keras.initializers.serialize(self.initializer),
            "combiner": self.combiner,
            "layout": self._chosen_layout(),  # chosen now if not yet: a reload keeps it
            "fused_slots": self.fused_slots,
        })
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Embedding":
        config = dict(config)
        rc = config.pop("config", None)
        if isinstance(rc, dict):
            rc = RedisTableConfig(rc.get("redis_config_abs_dir"),
                                  rc.get("redis_config_abs_dir_env"))
        config["initializer"] = keras.initializers.deserialize(config["initializer"])
        return cls(config=rc, **config)


def _attach(anchor: tf.Tensor, values: tf.Tensor, ticket: tf.Tensor) -> tf.Tensor:
    """`values`, with a gradient that flows to `anchor` as IndexedSlices naming each row by
    (ticket << 32) | position."""

    @tf.custom_gradient
    def attach(a: tf.Tensor, v: tf.Tensor) -> Tuple[tf.Tensor, Any]:
        def grad(dy: tf.Tensor) -> Tuple[tf.IndexedSlices, None]:
            n = tf.shape(dy, out_type=tf.int64)[0]
            ids = tf.bitwise.left_shift(ticket, 32) + tf.range(n, dtype=tf.int64)
            return tf.IndexedSlices(dy, ids, tf.constant([1], tf.int64)), None
        return tf.identity(v), grad

    return attach(anchor, values)


def _combine(rows: Any, combiner: str, ragged: bool) -> tf.Tensor:
    """Reduces the id axis (-2) of `rows`."""
    total = tf.reduce_sum(rows, axis=-2)
    if combiner == "sum":
        return total
    if ragged:
        count = tf.cast(rows.row_lengths(axis=-2), tf.float32)[..., None]
    else:
        count = tf.cast(tf.shape(rows)[-2], tf.float32)
    if combiner == "mean":
        return tf.math.divide_no_nan(total, count)
    return tf.math.divide_no_nan(total, tf.sqrt(count))
