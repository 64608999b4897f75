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
  explicit TensorBytes(const Tensor& t) : dtype_(t.dtype()) {
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
  rde::TensorView view() const { return {dtype_, data(), offsets(), dims()}; }

 private:
  int32_t dtype_;
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

rust::Slice<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <typename T>
rust::Slice<const T> Slice(const std::vector<T>& v) {
  return {v.data(), v.size()};
}

// The shape of every op on a table: input 0 is the table's handle; `Run` unpacks the other
// tensors, calls the Rust table (table.rust()) and returns its status. `Attrs` is read once,
// when the kernel is built (NoAttrs for an op without attributes).
template <typename Attrs, Status (*Run)(OpKernelContext*, const TableResource&, const Attrs&)>
class TableOp : public OpKernel {
 public:
  explicit TableOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    TableResource* table;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &table));
    core::ScopedUnref unref(table);
    OP_REQUIRES_OK(ctx, Run(ctx, *table, attrs_));
  }

 private:
  const Attrs attrs_;
};

// Reads attributes given as (name, &field) pairs, in order.
Status GetAttrs(OpKernelConstruction*) { return OkStatus(); }

template <typename T, typename... Rest>
Status GetAttrs(OpKernelConstruction* ctx, const char* name, T* value, Rest... rest) {
  TF_RETURN_IF_ERROR(ctx->GetAttr(name, value));
  return GetAttrs(ctx, rest...);
}

struct NoAttrs {
  explicit NoAttrs(OpKernelConstruction*) {}
};

// Statistics as two vectors, names and values (of type T).
template <typename T>
Status OutputStats(OpKernelContext* ctx, const rust::Vec<rust::String>& names,
                   const rust::Vec<T>& values) {
  const int64_t n = static_cast<int64_t>(names.size());
  Tensor *names_out = nullptr, *values_out = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({n}), &names_out));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({n}), &values_out));
  for (int64_t i = 0; i < n; ++i) {
    names_out->flat<tstring>()(i) = std::string(names[i]);
    values_out->flat<T>()(i) = values[i];
  }
  return OkStatus();
}

// A scalar output (int64 or double).
template <typename T>
Status OutputScalar(OpKernelContext* ctx, int index, T v) {
  Tensor* out = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(index, TensorShape({}), &out));
  out->scalar<T>()() = v;
  return OkStatus();
}

class TableOfTensorsOp : public OpKernel {
 public:
  explicit TableOfTensorsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_RESOURCE, TensorShape({}), &handle_));
    OP_REQUIRES_OK(ctx, GetAttrs(ctx,
                                "use_node_name_sharing", &use_node_name_sharing_,
                                "key_dtype", &key_dtype_, "value_dtype", &value_dtype_,
                                "value_shape", &value_shape_, "embedding_name", &embedding_name_,
                                "redis_config_abs_dir", &config_path_,
                                "redis_config_abs_dir_env", &config_env_,
                                "shard_index", &shard_index_, "shard_count", &shard_count_));
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
      const rde::OpenArgs args{Bytes(config_path_),   Bytes(config_env_),
                               Bytes(embedding_name_), key_dtype_,
                               value_dtype_,           value_shape_.num_elements(),
                               shard_index_,           shard_count_};
      rde::Status st;
      auto box = rde::open_table(args, st);
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
Status Find(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  const Tensor& keys = ctx->input(1);
  const Tensor& defaults = ctx->input(2);
  TensorShape out_shape = keys.shape();
  out_shape.AppendShape(table.value_shape());
  Tensor *values = nullptr, *exists = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, out_shape, &values));
  if (kWithExists) TF_RETURN_IF_ERROR(ctx->allocate_output(1, keys.shape(), &exists));
  TensorBytes k(keys), d(defaults);
  if (defaults.dtype() == DT_STRING) {
    std::vector<uint8_t> found(keys.NumElements());
    rde::Status st;
    auto rows = table.rust().find_strings(k.view(), d.view(), {found.data(), found.size()}, st);
    TF_RETURN_IF_ERROR(ToStatus(st));
    TF_RETURN_IF_ERROR(FillStrings(rows->data(), rows->offsets(), values));
    if (exists) std::memcpy(MutBytes(exists).data(), found.data(), found.size());
    return OkStatus();
  }
  const rde::RowsOut out{MutBytes(values), exists ? MutBytes(exists) : rust::Slice<uint8_t>()};
  return ToStatus(table.rust().find(k.view(), d.view(), out));
}

template <bool kImport>
Status Insert(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  TensorBytes k(ctx->input(1)), v(ctx->input(2));
  return ToStatus(table.rust().insert(k.view(), v.view(), kImport));
}

Status Accum(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  TensorBytes k(ctx->input(1)), v(ctx->input(2)), e(ctx->input(3));
  return ToStatus(table.rust().accum(k.view(), v.view(), e.data()));
}

Status Remove(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  TensorBytes k(ctx->input(1));
  return ToStatus(table.rust().remove(k.view()));
}

Status Clear(OpKernelContext*, const TableResource& table, const NoAttrs&) {
  return ToStatus(table.rust().clear());
}

Status Size(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  int64_t n = 0;
  TF_RETURN_IF_ERROR(ToStatus(table.rust().size(n)));
  return OutputScalar(ctx, 0, n);
}

Status TableStats(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  rust::Vec<rust::String> names;
  rust::Vec<double> values;
  table.rust().table_stats(names, values);
  return OutputStats(ctx, names, values);
}

// The process-wide counters: the one op without a table.
class StatsOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    rust::Vec<rust::String> names;
    rust::Vec<int64_t> values;
    rde::stats_snapshot(names, values);
    OP_REQUIRES_OK(ctx, OutputStats(ctx, names, values));
  }
};

Status Export(OpKernelContext* ctx, const TableResource& table, const NoAttrs&) {
  // Rust chooses how the rows arrive (streamed into the buffers, or read first) and how many
  // rows to allocate; the outputs are the filled prefix of the buffers (no copy).
  const DataType kdt = ctx->expected_output_dtype(0), vdt = ctx->expected_output_dtype(1);
  int64_t rows = 0;
  rde::Status st;
  auto ex = table.rust().export_begin(kdt, vdt, rows, st);
  TF_RETURN_IF_ERROR(ToStatus(st));
  Tensor keys, values;
  TensorShape value_shape({rows});
  value_shape.AppendShape(table.value_shape());
  TF_RETURN_IF_ERROR(ctx->allocate_temp(kdt, TensorShape({rows}), &keys));
  TF_RETURN_IF_ERROR(ctx->allocate_temp(vdt, value_shape, &values));
  int64_t n = 0;
  TF_RETURN_IF_ERROR(
      ToStatus(table.rust().export_fill(*ex, NumberBytes(&keys), NumberBytes(&values), n)));
  TF_RETURN_IF_ERROR(FillIfStrings(ex->key_data(), ex->key_offsets(), &keys));
  TF_RETURN_IF_ERROR(FillIfStrings(ex->value_data(), ex->value_offsets(), &values));
  ctx->set_output(0, keys.Slice(0, n));
  ctx->set_output(1, values.Slice(0, n));
  return OkStatus();
}

// Save (kLoad = false) or load the table through <dir>/<file_name>-keys/-values files.
template <bool kLoad>
struct FileAttrs {
  explicit FileAttrs(OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, GetAttrs(ctx,
                                "key_dtype", &key_dtype, "value_dtype", &value_dtype,
                                "dirpath_env", &dirpath_env,
                                kLoad ? "load_entire_dir" : "append_to_file", &flag,
                                "buffer_size", &buffer_size));
  }
  DataType key_dtype, value_dtype;
  std::string dirpath_env;
  bool flag = false;
  int64_t buffer_size = 1;
};

template <bool kLoad>
Status FileSystem(OpKernelContext* ctx, const TableResource& table, const FileAttrs<kLoad>& a) {
  const Tensor& dir = ctx->input(1);
  const Tensor& file = ctx->input(2);
  if (dir.NumElements() != 1 || file.NumElements() != 1) {
    return errors::InvalidArgument("dirpath and file_name must be scalars");
  }
  const tstring& d = dir.flat<tstring>()(0);
  const tstring& f = file.flat<tstring>()(0);
  auto bytes = [](const tstring& s) {
    return rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  const rde::FileArgs args{a.key_dtype, a.value_dtype,      bytes(d), bytes(f),
                           Bytes(a.dirpath_env), a.flag, a.buffer_size};
  return ToStatus(table.rust().file_system(kLoad, args));
}

// Joins list(string) attributes with newlines, as the bridge takes them.
std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += '\n';
    out += names[i];
  }
  return out;
}

struct TrainConfigureAttrs {
  explicit TrainConfigureAttrs(OpKernelConstruction* ctx) {
    std::vector<std::string> slots;
    OP_REQUIRES_OK(ctx, GetAttrs(ctx,
                                "slot_names", &slots, "fused_slots", &fused_slots,
                                "slot_inits", &slot_inits));
    slot_names = JoinNames(slots);
  }
  std::string slot_names;
  int64_t fused_slots = 0;
  std::vector<float> slot_inits;
};

Status TrainConfigure(OpKernelContext*, const TableResource& table,
                      const TrainConfigureAttrs& a) {
  return ToStatus(
      table.rust().train_configure(Bytes(a.slot_names), a.fused_slots, Slice(a.slot_inits)));
}

struct TrainLookupAttrs {
  explicit TrainLookupAttrs(OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, GetAttrs(ctx,
                                "dim", &dim, "init", &init, "init_params", &init_params,
                                "seed", &seed, "fused_slots", &fused_slots, "remember", &remember));
  }
  int64_t dim = 0, seed = 0, fused_slots = 0;
  std::string init;
  std::vector<float> init_params;
  bool remember = false;
};

Status TrainLookup(OpKernelContext* ctx, const TableResource& table, const TrainLookupAttrs& a) {
  const Tensor& keys = ctx->input(1);
  TensorShape out_shape = keys.shape();
  out_shape.AddDim(a.dim);
  Tensor *values = nullptr, *exists = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, out_shape, &values));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, keys.shape(), &exists));
  TensorBytes k(keys);
  const rde::TrainLookupArgs args{Bytes(a.init), Slice(a.init_params), a.seed, a.fused_slots,
                                  a.remember};
  int64_t ticket = 0;
  TF_RETURN_IF_ERROR(ToStatus(
      table.rust().train_lookup(k.view(), args, {MutBytes(values), MutBytes(exists)}, ticket)));
  return OutputScalar(ctx, 2, ticket);
}

struct TrainApplyAttrs {
  explicit TrainApplyAttrs(OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("optimizer", &optimizer));
  }
  std::string optimizer;
};

Status TrainApply(OpKernelContext* ctx, const TableResource& table, const TrainApplyAttrs& a) {
  auto id = ctx->input(1).flat<int64_t>();
  auto hy = ctx->input(3).flat<double>();
  TensorBytes g(ctx->input(2));
  int64_t n = 0;
  TF_RETURN_IF_ERROR(ToStatus(table.rust().train_apply(
      {id.data(), static_cast<size_t>(id.size())}, g.data(), Bytes(a.optimizer),
      {hy.data(), static_cast<size_t>(hy.size())}, n)));
  return OutputScalar(ctx, 0, n);
}

Status TrainGradNorm(OpKernelContext* ctx, const TableResource& table,
                     const TrainApplyAttrs& a) {
  auto id = ctx->input(1).flat<int64_t>();
  auto hy = ctx->input(3).flat<double>();
  TensorBytes g(ctx->input(2));
  double sq = 0;
  TF_RETURN_IF_ERROR(ToStatus(table.rust().train_grad_norm(
      {id.data(), static_cast<size_t>(id.size())}, g.data(), Bytes(a.optimizer),
      {hy.data(), static_cast<size_t>(hy.size())}, sq)));
  return OutputScalar(ctx, 0, sq);
}

}  // namespace

#define RDE_KERNEL(name, ...) \
  REGISTER_KERNEL_BUILDER(Name("TFRA>Rde" name).Device(DEVICE_CPU), __VA_ARGS__)
// An op on a table: its name, its attributes' type and its Run function.
#define RDE_TABLE_KERNEL(name, attrs, ...) RDE_KERNEL(name, TableOp<attrs, __VA_ARGS__>)

RDE_KERNEL("RedisTableOfTensors", TableOfTensorsOp);
RDE_KERNEL("RedisStats", StatsOp);
RDE_TABLE_KERNEL("RedisTableFind", NoAttrs, Find<false>);
RDE_TABLE_KERNEL("RedisTableFindWithExists", NoAttrs, Find<true>);
RDE_TABLE_KERNEL("RedisTableInsert", NoAttrs, Insert<false>);
RDE_TABLE_KERNEL("RedisTableImport", NoAttrs, Insert<true>);
RDE_TABLE_KERNEL("RedisTableAccum", NoAttrs, Accum);
RDE_TABLE_KERNEL("RedisTableRemove", NoAttrs, Remove);
RDE_TABLE_KERNEL("RedisTableClear", NoAttrs, Clear);
RDE_TABLE_KERNEL("RedisTableSize", NoAttrs, Size);
RDE_TABLE_KERNEL("RedisTableExport", NoAttrs, Export);
RDE_TABLE_KERNEL("RedisTableStats", NoAttrs, TableStats);
RDE_TABLE_KERNEL("RedisTableSaveToFileSystem", FileAttrs<false>, FileSystem<false>);
RDE_TABLE_KERNEL("RedisTableLoadFromFileSystem", FileAttrs<true>, FileSystem<true>);
RDE_TABLE_KERNEL("TrainConfigure", TrainConfigureAttrs, TrainConfigure);
RDE_TABLE_KERNEL("TrainLookup", TrainLookupAttrs, TrainLookup);
RDE_TABLE_KERNEL("TrainApply", TrainApplyAttrs, TrainApply);
RDE_TABLE_KERNEL("TrainGradNorm", TrainApplyAttrs, TrainGradNorm);

}  // namespace rde_tf
