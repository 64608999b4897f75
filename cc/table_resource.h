// The TF resource behind a table handle: it owns the Rust table and remembers the dtypes and
// value shape the op was created with.
#ifndef RDE_TABLE_RESOURCE_H_
#define RDE_TABLE_RESOURCE_H_

#include <string>
#include <utility>

#include "rust/cxx.h"
#include "redis-embedding/src/ffi.rs.h"
#include "tensorflow/core/framework/resource_base.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.pb.h"

namespace rde_tf {

class TableResource : public tensorflow::ResourceBase {
 public:
  TableResource(rust::Box<rde::TableBox> table, tensorflow::DataType key_dtype,
                tensorflow::DataType value_dtype, tensorflow::TensorShape value_shape)
      : table_(std::move(table)),
        key_dtype_(key_dtype),
        value_dtype_(value_dtype),
        value_shape_(std::move(value_shape)) {}

  std::string DebugString() const override { return std::string(table_->describe()); }

  const rde::TableBox& rust() const { return *table_; }
  tensorflow::DataType key_dtype() const { return key_dtype_; }
  tensorflow::DataType value_dtype() const { return value_dtype_; }
  const tensorflow::TensorShape& value_shape() const { return value_shape_; }

 private:
  rust::Box<rde::TableBox> table_;
  tensorflow::DataType key_dtype_;
  tensorflow::DataType value_dtype_;
  tensorflow::TensorShape value_shape_;
};

}  // namespace rde_tf

#endif  // RDE_TABLE_RESOURCE_H_
