// Op registrations and shape functions. Names carry our own prefix "RDE>" so that this
// library and TFRA's can be loaded in one process.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

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

}  // namespace

REGISTER_OP("RDE>RedisTableOfTensors")
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

REGISTER_OP("RDE>RedisTableFind")
    .Input("table_handle: resource")
    .Input("keys: Tin")
    .Input("default_value: Tout")
    .Output("values: Tout")
    .Attr("Tin: type")
    .Attr("Tout: type")
    .SetShapeFn([](InferenceContext* c) { return FindShape(c, false); });

REGISTER_OP("RDE>RedisTableFindWithExists")
    .Input("table_handle: resource")
    .Input("keys: Tin")
    .Input("default_value: Tout")
    .Output("values: Tout")
    .Output("exists: bool")
    .Attr("Tin: type")
    .Attr("Tout: type")
    .SetShapeFn([](InferenceContext* c) { return FindShape(c, true); });

REGISTER_OP("RDE>RedisTableInsert")
    .Input("table_handle: resource")
    .Input("keys: Tin")
    .Input("values: Tout")
    .Attr("Tin: type")
    .Attr("Tout: type")
    .SetShapeFn(ScalarHandle);

REGISTER_OP("RDE>RedisTableAccum")
    .Input("table_handle: resource")
    .Input("keys: key_dtype")
    .Input("values_or_deltas: value_dtype")
    .Input("exists: bool")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .SetShapeFn(ScalarHandle);

REGISTER_OP("RDE>RedisTableRemove")
    .Input("table_handle: resource")
    .Input("keys: Tin")
    .Attr("Tin: type")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ScalarHandle(c));
      ShapeHandle keys;
      return c->WithRankAtLeast(c->input(1), 1, &keys);
    });

REGISTER_OP("RDE>RedisTableClear")
    .Input("table_handle: resource")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .SetShapeFn(ScalarHandle);

REGISTER_OP("RDE>RedisTableSize")
    .Input("table_handle: resource")
    .Output("size: int64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ScalarHandle(c));
      c->set_output(0, c->Scalar());
      return OkStatus();
    });

// Process-wide fault and traffic counters (retries, redirects, connection failures, ...).
REGISTER_OP("RDE>RedisStats")
    .Output("names: string")
    .Output("values: int64")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Vector(c->UnknownDim()));
      c->set_output(1, c->Vector(c->UnknownDim()));
      return OkStatus();
    });

REGISTER_OP("RDE>RedisTableExport")
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

REGISTER_OP("RDE>RedisTableImport")
    .Input("table_handle: resource")
    .Input("keys: Tin")
    .Input("values: Tout")
    .Attr("Tin: type")
    .Attr("Tout: type")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(ScalarHandle(c));
      ShapeHandle keys;
      return c->WithRank(c->input(1), 1, &keys);
    });

REGISTER_OP("RDE>RedisTableSaveToFileSystem")
    .Input("table_handle: resource")
    .Input("dirpath: string")
    .Input("file_name: string")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .Attr("dirpath_env: string")
    .Attr("append_to_file: bool")
    .Attr("buffer_size: int >= 1")
    .SetShapeFn(ScalarHandle);

REGISTER_OP("RDE>RedisTableLoadFromFileSystem")
    .Input("table_handle: resource")
    .Input("dirpath: string")
    .Input("file_name: string")
    .Attr("key_dtype: type")
    .Attr("value_dtype: type")
    .Attr("dirpath_env: string")
    .Attr("load_entire_dir: bool")
    .Attr("buffer_size: int >= 1")
    .SetShapeFn(ScalarHandle);

}  // namespace rde_tf
