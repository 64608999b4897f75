// Op kernels. They hold no table logic: each unpacks its tensors into byte slices, calls the
// Rust table through the cxx bridge, and turns the returned status into a TF Status.
#include <cstring>
#include <vector>

#include "rust/cxx.h"
#include "redis-embedding/src/ffi.rs.h"
#include "status.h"
#include "table_resource.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/mutex.h"

namespace rde_tf {

using namespace tensorflow;  // NOLINT(build/namespaces)

namespace {

// A tensor's contents as bytes: the buffer itself for numbers, or the concatenated strings
// with their offsets for DT_STRING.
class TensorBytes {
 public:
  explicit TensorBytes(const Tensor& t) {
    if (t.dtype() == DT_STRING) {
      auto flat = t.flat<tstring>();
      offsets_.reserve(flat.size() + 1);
      offsets_.push_back(0);
      size_t total = 0;
      for (int64_t i = 0; i < flat.size(); ++i) total += flat(i).size();
      storage_.reserve(total);
      for (int64_t i = 0; i < flat.size(); ++i) {
        const auto& s = flat(i);
        storage_.insert(storage_.end(), s.data(), s.data() + s.size());
        offsets_.push_back(storage_.size());
      }
      data_ = storage_.data();
      size_ = storage_.size();
    } else {
      auto sp = t.tensor_data();
      data_ = reinterpret_cast<const uint8_t*>(sp.data());
      size_ = sp.size();
    }
    for (auto d : t.shape().dim_sizes()) dims_.push_back(d);
  }
  rust::Slice<const uint8_t> data() const { return {data_, size_}; }
  rust::Slice<const uint64_t> offsets() const { return {offsets_.data(), offsets_.size()}; }
  rust::Slice<const int64_t> dims() const { return {dims_.data(), dims_.size()}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<uint8_t> storage_;
  std::vector<uint64_t> offsets_;
  std::vector<int64_t> dims_;
};

rust::Slice<uint8_t> MutBytes(Tensor* t) {
  auto sp = t->tensor_data();
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(sp.data())), sp.size()};
}

// Copies string elements (element i is data[offsets[i]..offsets[i+1]]) into `out`, which
// must hold exactly offsets.size() - 1 of them; anything else is a bug reported, not truncated.
Status FillStrings(rust::Slice<const uint8_t> data, rust::Slice<const uint64_t> offsets,
                   Tensor* out) {
  auto flat = out->flat<tstring>();
  if (flat.size() == 0) return OkStatus();
  if (offsets.size() != static_cast<size_t>(flat.size()) + 1 ||
      offsets[offsets.size() - 1] > data.size()) {
    return errors::Internal("string rows do not fit the output: ", offsets.size(),
                            " offsets and ", data.size(), " bytes for ", flat.size(),
                            " elements");
  }
  for (int64_t i = 0; i < flat.size(); ++i) {
    if (offsets[i] > offsets[i + 1]) return errors::Internal("string offsets decrease at ", i);
    flat(i).assign(reinterpret_cast<const char*>(data.data()) + offsets[i],
                   offsets[i + 1] - offsets[i]);
  }
  return OkStatus();
}

// The bytes of a tensor of numbers; empty for DT_STRING, whose buffer holds tstring objects.
rust::Slice<uint8_t> NumberBytes(Tensor* t) {
  if (t->dtype() == DT_STRING) return {};
  return MutBytes(t);
}

// FillStrings for a DT_STRING tensor; a tensor of numbers was written through NumberBytes.
Status FillIfStrings(rust::Slice<const uint8_t> data, rust::Slice<const uint64_t> offsets,
                     Tensor* out) {
  if (out->dtype() != DT_STRING) return OkStatus();
  return FillStrings(data, offsets, out);
}

Status GetTable(OpKernelContext* ctx, TableResource** table) {
  return LookupResource(ctx, HandleFromInput(ctx, 0), table);
}

}  // namespace

class TableOfTensorsOp : public OpKernel {
 public:
  explicit TableOfTensorsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_RESOURCE, TensorShape({}), &handle_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_node_name_sharing", &use_node_name_sharing_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("key_dtype", &key_dtype_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("value_dtype", &value_dtype_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("value_shape", &value_shape_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("embedding_name", &embedding_name_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("redis_config_abs_dir", &config_path_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("redis_config_abs_dir_env", &config_env_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shard_index", &shard_index_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shard_count", &shard_count_));
    OP_REQUIRES(ctx, TensorShapeUtils::IsVector(value_shape_),
                errors::InvalidArgument("Default value must be a vector, got shape ",
                                        value_shape_.DebugString()));
  }

  ~TableOfTensorsOp() override {
    if (handle_set_ && cinfo_.resource_is_private_to_kernel()) {
      cinfo_.resource_manager()
          ->Delete<TableResource>(cinfo_.container(), cinfo_.name())
          .IgnoreError();
    }
  }

  void Compute(OpKernelContext* ctx) override {
    mutex_lock l(mu_);
    if (!handle_set_) {
      OP_REQUIRES_OK(ctx, cinfo_.Init(ctx->resource_manager(), def(), use_node_name_sharing_));
    }
    auto creator = [this](TableResource** ret) {
      rde::Status st;
      auto box = rde::open_table(
          rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(config_path_.data()),
                                     config_path_.size()),
          rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(config_env_.data()),
                                     config_env_.size()),
          rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(embedding_name_.data()),
                                     embedding_name_.size()),
          key_dtype_, value_dtype_, value_shape_.num_elements(), shard_index_, shard_count_, st);
      TF_RETURN_IF_ERROR(ToStatus(st));
      *ret = new TableResource(std::move(box), key_dtype_, value_dtype_, value_shape_);
      return OkStatus();
    };
    TableResource* table = nullptr;
    OP_REQUIRES_OK(ctx, cinfo_.resource_manager()->LookupOrCreate<TableResource>(
                            cinfo_.container(), cinfo_.name(), &table, creator));
    core::ScopedUnref unref(table);
    OP_REQUIRES(ctx,
                table->key_dtype() == key_dtype_ && table->value_dtype() == value_dtype_ &&
                    table->value_shape() == value_shape_,
                errors::InvalidArgument("redis table ", cinfo_.name(),
                                        " already exists with other dtypes or value shape"));
    if (!handle_set_) {
      handle_.scalar<ResourceHandle>()() =
          MakeResourceHandle<TableResource>(ctx, cinfo_.container(), cinfo_.name());
      handle_set_ = true;
    }
    ctx->set_output(0, handle_);
  }

 private:
  mutex mu_;
  Tensor handle_;
  bool handle_set_ = false;
  ContainerInfo cinfo_;
  bool use_node_name_sharing_ = false;
  DataType key_dtype_, value_dtype_;
  TensorShape value_shape_;
  std::string embedding_name_, config_path_, config_env_;
  int64_t shard_index_ = 1, shard_count_ = 1;
};

template <bool kWithExists>
class FindOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& keys = ctx->input(1);
    const Tensor& defaults = ctx->input(2);
    TensorShape out_shape = keys.shape();
    out_shape.AppendShape(table->value_shape());
    Tensor* values = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &values));
    Tensor* exists = nullptr;
    if (kWithExists) OP_REQUIRES_OK(ctx, ctx->allocate_output(1, keys.shape(), &exists));
    TensorBytes k(keys), d(defaults);
    if (defaults.dtype() == DT_STRING) {
      std::vector<uint8_t> found(keys.NumElements());
      rde::Status st;
      auto rows = table->rust().find_strings(keys.dtype(), defaults.dtype(), k.data(),
                                             k.offsets(), d.data(), d.offsets(),
                                             {found.data(), found.size()}, st);
      OP_REQUIRES_OK(ctx, ToStatus(st));
      OP_REQUIRES_OK(ctx, FillStrings(rows->data(), rows->offsets(), values));
      if (exists) std::memcpy(MutBytes(exists).data(), found.data(), found.size());
      return;
    }
    rust::Slice<uint8_t> no_exists;
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().find(
                            keys.dtype(), defaults.dtype(), k.data(), k.offsets(), k.dims(),
                            d.data(), MutBytes(values), exists ? MutBytes(exists) : no_exists,
                            kWithExists)));
  }
};

template <bool kImport>
class InsertOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    TensorBytes k(keys), v(values);
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().insert(keys.dtype(), values.dtype(), k.data(),
                                                      k.offsets(), k.dims(), v.data(),
                                                      v.offsets(), v.dims(), kImport)));
  }
};

class AccumOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const Tensor& exists = ctx->input(3);
    TensorBytes k(keys), v(values), e(exists);
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().accum(keys.dtype(), values.dtype(), k.data(),
                                                     k.offsets(), k.dims(), v.data(),
                                                     v.offsets(), v.dims(), e.data())));
  }
};

class RemoveOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& keys = ctx->input(1);
    TensorBytes k(keys);
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().remove(keys.dtype(), k.data(), k.offsets())));
  }
};

class ClearOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().clear()));
  }
};

class SizeOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    int64_t n = 0;
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().size(n)));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int64_t>()() = n;
  }
};

class StatsOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    rust::Vec<rust::String> names;
    rust::Vec<int64_t> values;
    rde::stats_snapshot(names, values);
    const int64_t n = static_cast<int64_t>(names.size());
    Tensor *names_out = nullptr, *values_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n}), &names_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n}), &values_out));
    for (int64_t i = 0; i < n; ++i) {
      names_out->flat<tstring>()(i) = std::string(names[i]);
      values_out->flat<int64_t>()(i) = values[i];
    }
  }
};

class TableStatsOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    rust::Vec<rust::String> names;
    rust::Vec<double> values;
    table->rust().table_stats(names, values);
    const int64_t n = static_cast<int64_t>(names.size());
    Tensor *names_out = nullptr, *values_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n}), &names_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n}), &values_out));
    for (int64_t i = 0; i < n; ++i) {
      names_out->flat<tstring>()(i) = std::string(names[i]);
      values_out->flat<double>()(i) = values[i];
    }
  }
};

class ExportOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    // Rust chooses how the rows arrive (streamed into the buffers, or read first) and how many
    // rows to allocate; the outputs are the filled prefix of the buffers (no copy).
    const DataType kdt = ctx->expected_output_dtype(0), vdt = ctx->expected_output_dtype(1);
    int64_t rows = 0;
    rde::Status st;
    auto ex = table->rust().export_begin(kdt, vdt, rows, st);
    OP_REQUIRES_OK(ctx, ToStatus(st));
    Tensor keys, values;
    TensorShape value_shape({rows});
    value_shape.AppendShape(table->value_shape());
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(kdt, TensorShape({rows}), &keys));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(vdt, value_shape, &values));
    int64_t n = 0;
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().export_fill(*ex, NumberBytes(&keys),
                                                           NumberBytes(&values), n)));
    OP_REQUIRES_OK(ctx, FillIfStrings(ex->key_data(), ex->key_offsets(), &keys));
    OP_REQUIRES_OK(ctx, FillIfStrings(ex->value_data(), ex->value_offsets(), &values));
    ctx->set_output(0, keys.Slice(0, n));
    ctx->set_output(1, values.Slice(0, n));
  }
};

// Save (kLoad = false) or load the table through <dir>/<file_name>-keys/-values files.
template <bool kLoad>
class FileSystemOp : public OpKernel {
 public:
  explicit FileSystemOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("key_dtype", &key_dtype_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("value_dtype", &value_dtype_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dirpath_env", &dirpath_env_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kLoad ? "load_entire_dir" : "append_to_file", &flag_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("buffer_size", &buffer_size_));
  }

  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& dir = ctx->input(1);
    const Tensor& file = ctx->input(2);
    OP_REQUIRES(ctx, dir.NumElements() == 1 && file.NumElements() == 1,
                errors::InvalidArgument("dirpath and file_name must be scalars"));
    const tstring& d = dir.flat<tstring>()(0);
    const tstring& f = file.flat<tstring>()(0);
    auto bytes = [](const char* p, size_t n) {
      return rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(p), n);
    };
    auto d_s = bytes(d.data(), d.size());
    auto f_s = bytes(f.data(), f.size());
    auto e_s = bytes(dirpath_env_.data(), dirpath_env_.size());
    rde::Status st = kLoad ? table->rust().load_from_file_system(key_dtype_, value_dtype_, d_s, f_s,
                                                                 e_s, flag_, buffer_size_)
                           : table->rust().save_to_file_system(key_dtype_, value_dtype_, d_s, f_s,
                                                               e_s, flag_, buffer_size_);
    OP_REQUIRES_OK(ctx, ToStatus(st));
  }

 private:
  DataType key_dtype_, value_dtype_;
  std::string dirpath_env_;
  bool flag_ = false;
  int64_t buffer_size_ = 1;
};

// Joins list(string) attributes with newlines, as the bridge takes them.
std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += '\n';
    out += names[i];
  }
  return out;
}

rust::Slice<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class TrainConfigureOp : public OpKernel {
 public:
  explicit TrainConfigureOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::vector<std::string> slots;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("slot_names", &slots));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("fused_slots", &fused_slots_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("slot_inits", &slot_inits_));
    slot_names_ = JoinNames(slots);
  }
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().train_configure(
                            Bytes(slot_names_), fused_slots_,
                            {slot_inits_.data(), slot_inits_.size()})));
  }

 private:
  std::string slot_names_;
  int64_t fused_slots_ = 0;
  std::vector<float> slot_inits_;
};

class TrainLookupOp : public OpKernel {
 public:
  explicit TrainLookupOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dim", &dim_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("init", &init_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("init_params", &init_params_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed", &seed_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("fused_slots", &fused_slots_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("remember", &remember_));
  }
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& keys = ctx->input(1);
    TensorShape out_shape = keys.shape();
    out_shape.AddDim(dim_);
    Tensor *values = nullptr, *exists = nullptr, *ticket = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &values));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, keys.shape(), &exists));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({}), &ticket));
    TensorBytes k(keys);
    int64_t t = 0;
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().train_lookup(
                            keys.dtype(), k.data(), k.offsets(), Bytes(init_),
                            {init_params_.data(), init_params_.size()}, seed_, fused_slots_,
                            MutBytes(values), MutBytes(exists), remember_, t)));
    ticket->scalar<int64_t>()() = t;
  }

 private:
  int64_t dim_ = 0, seed_ = 0, fused_slots_ = 0;
  std::string init_;
  std::vector<float> init_params_;
  bool remember_ = false;
};

class TrainApplyOp : public OpKernel {
 public:
  explicit TrainApplyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("optimizer", &optimizer_));
  }
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    core::ScopedUnref unref(table);
    const Tensor& ids = ctx->input(1);
    const Tensor& grads = ctx->input(2);
    const Tensor& hyper = ctx->input(3);
    auto id = ids.flat<int64_t>();
    auto hy = hyper.flat<double>();
    TensorBytes g(grads);
    Tensor* updated = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &updated));
    int64_t n = 0;
    OP_REQUIRES_OK(ctx, ToStatus(table->rust().train_apply(
                            {id.data(), static_cast<size_t>(id.size())}, g.data(),
                            Bytes(optimizer_), {hy.data(), static_cast<size_t>(hy.size())}, n)));
    updated->scalar<int64_t>()() = n;
  }

 private:
  std::string optimizer_;
};

#define RDE_KERNEL(name, ...) \
  REGISTER_KERNEL_BUILDER(Name("TFRA>Rde" name).Device(DEVICE_CPU), __VA_ARGS__)

RDE_KERNEL("RedisTableOfTensors", TableOfTensorsOp);
RDE_KERNEL("RedisTableFind", FindOp<false>);
RDE_KERNEL("RedisTableFindWithExists", FindOp<true>);
RDE_KERNEL("RedisTableInsert", InsertOp<false>);
RDE_KERNEL("RedisTableImport", InsertOp<true>);
RDE_KERNEL("RedisTableAccum", AccumOp);
RDE_KERNEL("RedisTableRemove", RemoveOp);
RDE_KERNEL("RedisTableClear", ClearOp);
RDE_KERNEL("RedisTableSize", SizeOp);
RDE_KERNEL("RedisTableExport", ExportOp);
RDE_KERNEL("RedisStats", StatsOp);
RDE_KERNEL("RedisTableStats", TableStatsOp);
RDE_KERNEL("RedisTableSaveToFileSystem", FileSystemOp<false>);
RDE_KERNEL("RedisTableLoadFromFileSystem", FileSystemOp<true>);
RDE_KERNEL("TrainConfigure", TrainConfigureOp);
RDE_KERNEL("TrainLookup", TrainLookupOp);
RDE_KERNEL("TrainApply", TrainApplyOp);

}  // namespace rde_tf
