// Op registrations and shape functions. Names live in TFRA's namespace, "TFRA>Rde...", so a
// model that TFRA's docs tell to save with `namespace_whitelist=["TFRA"]` saves unchanged
// with our tables; the "Rde" prefix keeps them apart from TFRA's own "TFRA>RedisTable..." ops,
// so both libraries load into one process.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
// The TensorFlow this library was compiled against (`tf.__version__`, defined by build.rs:
// TF 2.21's headers no longer carry it). redis_embedding/_ops.py reads it from the file before
// loading: a library built for another TensorFlow fails to load with an undefined symbol that
// names neither version.
extern "C" const char rde_built_for_tensorflow[] =
    "redis-embedding:built-for-tensorflow=" RDE_TF_VERSION ";";
// The linker drops unreferenced sections (--gc-sections); a load-time reference keeps it.
static const bool rde_marker_kept = [] {
  asm volatile("" : : "r"(rde_built_for_tensorflow));
  return true;
}();

namespace rde_tf {

using tensorflow::DataType;
using tensorflow::OkStatus;
using tensorflow::Status;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeAndType;
using tensorflow::shape_inference::ShapeHandle;

namespace {

// The table handle must be a scalar.
Status ScalarHandle(InferenceContext* c) {
  ShapeHandle unused;
  return c->WithRank(c->input(0), 0, &unused);
}

// The value shape recorded on the handle, if known.
bool HandleValueShape(InferenceContext* c, ShapeHandle* out) {
  const auto* data = c->input_handle_shapes_and_types(0);
  if (data == nullptr || data->size() != 2) return false;
  *out = (*data)[1].shape;
  return true;
}

Status FindShape(InferenceContext* c, bool with_exists) {
  TF_RETURN_IF_ERROR(ScalarHandle(c));
  ShapeHandle value_shape, out;
  if (HandleValueShape(c, &value_shape)) {
    TF_RETURN_IF_ERROR(c->Concatenate(c->input(1), value_shape, &out));
  } else {
    out = c->UnknownShape();
  }
  c->set_output(0, out);
  if (with_exists) c->set_output(1, c->input(1));
  return OkStatus();
}

// The handle, and one scalar output.
Status ScalarOutput(InferenceContext* c) {
  TF_RETURN_IF_ERROR(ScalarHandle(c));
  c->set_output(0, c->Scalar());
  return OkStatus();
}

// The handle, and keys (input 1) of rank `rank` (exactly, or at least).
Status KeysOfRank(InferenceContext* c, int rank, bool exactly) {
  TF_RETURN_IF_ERROR(ScalarHandle(c));
  ShapeHandle keys;
  return exactly ? c->WithRank(c->input(1), rank, &keys)
                 : c->WithRankAtLeast(c->input(1), rank, &keys);
}

// Statistics: two vectors, names and values (after the handle, for a table's).
Status NamesAndValues(InferenceContext* c, bool of_table) {
  if (of_table) TF_RETURN_IF_ERROR(ScalarHandle(c));
  c->set_output(0, c->Vector(c->UnknownDim()));
  c->set_output(1, c->Vector(c->UnknownDim()));
  return OkStatus();
}

}  // namespace

REGISTER_OP("TFRA>RdeRedisTableOfTensors")
    .Output("table_handle: resource")
    .Attr("container: string = ''")
    .Attr("shared_name: string = ''")
    .Attr("use_node_name_sharing: bool = false")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .Attr("value_shape: shape = {}")
    .Attr("embedding_name: string = ''")
    .Attr("redis_config_abs_dir: string = ''")
    .Attr("redis_config_abs_dir_env: string = ''")
    .Attr("shard_index: int = 1")
    .Attr("shard_count: int = 1")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      DataType key_dtype, value_dtype;
      tensorflow::PartialTensorShape value_p;
      TF_RETURN_IF_ERROR(c->GetAttr("key_dtype", &key_dtype));
      TF_RETURN_IF_ERROR(c->GetAttr("value_dtype", &value_dtype));
      TF_RETURN_IF_ERROR(c->GetAttr("value_shape", &value_p));
      ShapeHandle value_s;
      TF_RETURN_IF_ERROR(c->MakeShapeFromPartialTensorShape(value_p, &value_s));
      c->set_output(0, c->Scalar());
      c->set_output_handle_shapes_and_types(
          0, std::vector<ShapeAndType>{{c->Scalar(), key_dtype}, {value_s, value_dtype}});
      return OkStatus();
    });

// The table's handle, then keys (Tin) and a second tensor (Tout): find's defaults, insert's
// and import's values.
#define RDE_KEYS_AND(second)   \
  Input("table_handle: resource") \
      .Input("keys: Tin")         \
      .Input(second ": Tout")     \
      .Attr("Tin: type")          \
      .Attr("Tout: type")

// A file-system save or load; `flag` names its bool attribute.
#define RDE_FILE_SYSTEM_OP(flag)        \
  Input("table_handle: resource")       \
      .Input("dirpath: string")         \
      .Input("file_name: string")       \
      .Attr("key_dtype: type")          \
      .Attr("value_dtype: type")        \
      .Attr("dirpath_env: string")      \
      .Attr(flag ": bool")              \
      .Attr("buffer_size: int >= 1")    \
      .SetShapeFn(ScalarHandle)

REGISTER_OP("TFRA>RdeRedisTableFind")
    .RDE_KEYS_AND("default_value")
    .Output("values: Tout")
    .SetShapeFn([](InferenceContext* c) { return FindShape(c, false); });

REGISTER_OP("TFRA>RdeRedisTableFindWithExists")
    .RDE_KEYS_AND("default_value")
    .Output("values: Tout")
    .Output("exists: bool")
    .SetShapeFn([](InferenceContext* c) { return FindShape(c, true); });

REGISTER_OP("TFRA>RdeRedisTableInsert").RDE_KEYS_AND("values").SetShapeFn(ScalarHandle);

REGISTER_OP("TFRA>RdeRedisTableAccum")
    .Input("table_handle: resource")
    .Input("keys: key_dtype")
    .Input("values_or_deltas: value_dtype")
    .Input("exists: bool")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .SetShapeFn(ScalarHandle);

REGISTER_OP("TFRA>RdeRedisTableRemove")
    .Input("table_handle: resource")
    .Input("keys: Tin")
    .Attr("Tin: type")
    .SetShapeFn([](InferenceContext* c) { return KeysOfRank(c, 1, false); });

REGISTER_OP("TFRA>RdeRedisTableClear")
    .Input("table_handle: resource")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .SetShapeFn(ScalarHandle);

REGISTER_OP("TFRA>RdeRedisTableSize")
    .Input("table_handle: resource")
    .Output("size: int64")
    .SetShapeFn(ScalarOutput);

// One table's statistics: counters, hit rate and latency percentiles (src/table/stats.rs).
REGISTER_OP("TFRA>RdeRedisTableStats")
    .Input("table_handle: resource")
    .Output("names: string")
    .Output("values: double")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return NamesAndValues(c, true); });

// Process-wide fault and traffic counters (retries, redirects, connection failures, ...).
REGISTER_OP("TFRA>RdeRedisStats")
    .Output("names: string")
    .Output("values: int64")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return NamesAndValues(c, false); });

REGISTER_OP("TFRA>RdeRedisTableExport")
    .Input("table_handle: resource")
    .Output("keys: Tkeys")
    .Output("values: Tvalues")
    .Attr("Tkeys: type")
    .Attr("Tvalues: type")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ScalarHandle(c));
      ShapeHandle keys = c->UnknownShapeOfRank(1), value_shape, values;
      if (HandleValueShape(c, &value_shape)) {
        TF_RETURN_IF_ERROR(c->Concatenate(keys, value_shape, &values));
      } else {
        values = c->UnknownShapeOfRank(2);
      }
      c->set_output(0, keys);
      c->set_output(1, values);
      return OkStatus();
    });

REGISTER_OP("TFRA>RdeRedisTableImport")
    .RDE_KEYS_AND("values")
    .SetShapeFn([](InferenceContext* c) { return KeysOfRank(c, 1, true); });

REGISTER_OP("TFRA>RdeRedisTableSaveToFileSystem").RDE_FILE_SYSTEM_OP("append_to_file");

REGISTER_OP("TFRA>RdeRedisTableLoadFromFileSystem").RDE_FILE_SYSTEM_OP("load_entire_dir");

// Training (src/table/train.rs). TrainConfigure records the optimizer's slot layout on the
// layer's handle table (slot tables by name, or fused_slots > 0 for rows holding params then
// slots); the optimizer runs it eagerly when it is built. TrainLookup reads params (and, in
// training mode, the configured slots), initialises keys not yet stored, and in training mode
// remembers keys and rows under the returned ticket. TrainApply applies one sparse optimizer
// step to the rows a gradient names by (ticket << 32 | position) and writes them back (or,
// within a gradient accumulation cycle, keeps the gradient for the cycle's last step).
REGISTER_OP("TFRA>RdeTrainConfigure")
    .Input("table_handle: resource")
    .Attr("slot_names: list(string) = []")
    .Attr("fused_slots: int >= 0 = 0")
    .Attr("slot_inits: list(float) = []")
    .SetIsStateful()
    .SetShapeFn(ScalarHandle);

REGISTER_OP("TFRA>RdeTrainLookup")
    .Input("table_handle: resource")
    .Input("keys: key_dtype")
    .Output("values: float")
    .Output("exists: bool")
    .Output("ticket: int64")
    .Attr("key_dtype: type")
    .Attr("dim: int >= 1")
    .Attr("init: string")
    .Attr("init_params: list(float)")
    .Attr("seed: int = 0")
    .Attr("fused_slots: int >= 0 = 0")
    .Attr("remember: bool = false")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ScalarHandle(c));
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->Concatenate(c->input(1), c->Vector(dim), &out));
      c->set_output(0, out);
      c->set_output(1, c->input(1));
      c->set_output(2, c->Scalar());
      return OkStatus();
    });

REGISTER_OP("TFRA>RdeTrainApply")
    .Input("table_handle: resource")
    .Input("ids: int64")
    .Input("grads: float")
    .Input("hyper: double")
    .Output("updated: int64")
    .Attr("optimizer: string")
    .SetIsStateful()
    .SetShapeFn(ScalarOutput);

// TrainGradNorm: the squared L2 norm of the gradient TrainApply, given the same inputs, would
// hand the optimizer (duplicate ids summed; under gradient accumulation the cycle's average),
// for Keras's global_clipnorm. It changes nothing.
REGISTER_OP("TFRA>RdeTrainGradNorm")
    .Input("table_handle: resource")
    .Input("ids: int64")
    .Input("grads: float")
    .Input("hyper: double")
    .Output("sq_norm: double")
    .Attr("optimizer: string")
    .SetIsStateful()
    .SetShapeFn(ScalarOutput);

}  // namespace rde_tf
