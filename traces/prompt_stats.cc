#include "traces/prompt_stats.h"

#include <fmt/core.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include "common/atomic_file.h"
#include "common/error.h"
#include "traces/hdf5_util.h"

namespace kvsim::traces {
namespace {

using hdf5::Handle;
using hdf5::Hdf5Mutex;

constexpr const char* kFormat = "kvsim-prompt-stats";
constexpr int64_t kFormatVersion = 1;
constexpr const char* kStatistic = "causal_column_sums";
constexpr const char* kHash = "fnv1a64-words";

std::string LayerDataset(int layer) { return fmt::format("/layers/{}/column_sums", layer); }

// FNV-1a 64 over 8-byte words fed as a stream of float32 bit patterns (PromptContentHash).
class WordHasher {
 public:
  void Add(const float* data, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      uint32_t bits = 0;
      std::memcpy(&bits, data + i, sizeof(bits));
      if (has_low_) {
        Mix(low_ | (static_cast<uint64_t>(bits) << 32));
        has_low_ = false;
      } else {
        low_ = bits;
        has_low_ = true;
      }
    }
  }
  uint64_t Finish() {
    if (has_low_) Mix(low_);
    has_low_ = false;
    return hash_;
  }

 private:
  void Mix(uint64_t word) {
    hash_ ^= word;
    hash_ *= 0x100000001b3ULL;  // the FNV-1a 64-bit prime
  }

  uint64_t hash_ = 0xcbf29ce484222325ULL;  // the FNV-1a 64-bit offset basis
  uint64_t low_ = 0;
  bool has_low_ = false;
};

// The shape rows, in the order the root attributes are written and compared.
struct ShapeField {
  const char* name;
  int64_t PromptStatsShape::*int64_field;
  int PromptStatsShape::*int_field;
};

int64_t Get(const PromptStatsShape& s, const ShapeField& f) {
  return f.int_field != nullptr ? s.*(f.int_field) : s.*(f.int64_field);
}

constexpr ShapeField kShapeFields[] = {
    {"layers", nullptr, &PromptStatsShape::layers},
    {"q_heads", nullptr, &PromptStatsShape::q_heads},
    {"kv_heads", nullptr, &PromptStatsShape::kv_heads},
    {"head_dim", nullptr, &PromptStatsShape::head_dim},
    {"prompt_len", &PromptStatsShape::prompt_len, nullptr},
    {"total_len", &PromptStatsShape::total_len, nullptr},
};

bool WriteUint64Attribute(hid_t object, const char* name, uint64_t value) {
  std::lock_guard lock(Hdf5Mutex());
  Handle space(H5Screate(H5S_SCALAR));
  Handle attr(H5Acreate2(object, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  return attr.valid() && H5Awrite(attr.get(), H5T_NATIVE_UINT64, &value) >= 0;
}

// Reads and validates one open sidecar. Every method throws InputError naming the file.
class SidecarReader {
 public:
  explicit SidecarReader(std::filesystem::path path) : path_(std::move(path)) {}

  [[noreturn]] void Fail(const std::string& what) const {
    ThrowInputError(
        "{}: {} (a kvsim prompt-statistics sidecar, traces/FORMAT.md; delete it or "
        "run `kvsim stats --force` to rewrite it)",
        path_.string(), what);
  }

  void Open() {
    hdf5::SilenceErrors();
    if (H5Fis_hdf5(path_.c_str()) <= 0) Fail("not an HDF5 file");
    file_ = Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!file_.valid()) Fail("HDF5 cannot open the file (truncated or corrupt?)");
    std::string format;
    if (!StringAttribute("format", &format)) {
      Fail(fmt::format("attribute 'format' of '/' is missing or not a string, expected '{}'",
                       kFormat));
    }
    if (format != kFormat) {
      Fail(fmt::format("attribute 'format' of '/' is '{}', expected '{}'", format, kFormat));
    }
    const int64_t version = IntAttribute(file_.get(), "/", "format_version");
    if (version != kFormatVersion) {
      Fail(fmt::format("attribute 'format_version' of '/' is {}, expected {}", version,
                       kFormatVersion));
    }
    for (const ShapeField& f : kShapeFields) {
      const int64_t value = IntAttribute(file_.get(), "/", f.name);
      if (value < 1) Fail(fmt::format("attribute '{}' of '/' is {}, expected >= 1", f.name, value));
      if (f.int_field != nullptr) {
        shape_.*(f.int_field) = static_cast<int>(value);
      } else {
        shape_.*(f.int64_field) = value;
      }
    }
    if (shape_.prompt_len > shape_.total_len) {
      Fail(fmt::format("attribute 'prompt_len' of '/' is {}, expected <= total_len {}",
                       shape_.prompt_len, shape_.total_len));
    }
  }

  const PromptStatsShape& shape() const { return shape_; }

  // Opens layer `layer`'s dataset, checks its dtype and shape, returns its content hash.
  uint64_t OpenLayer(int layer) {
    const std::string name = LayerDataset(layer);
    if (!hdf5::Exists(file_.get(), name)) {
      Fail(fmt::format("dataset '{}' is missing, expected float32 [q_heads {}, prompt_len {}]",
                       name, shape_.q_heads, shape_.prompt_len));
    }
    dataset_ = Handle(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT));
    Handle type(H5Dget_type(dataset_.get()));
    if (H5Tget_class(type.get()) != H5T_FLOAT) {
      Fail(fmt::format("dataset '{}' has dtype {}, expected float32", name,
                       hdf5::DescribeType(type.get())));
    }
    const std::vector<hsize_t> dims = hdf5::Dims(dataset_.get());
    const std::vector<hsize_t> want = {static_cast<hsize_t>(shape_.q_heads),
                                       static_cast<hsize_t>(shape_.prompt_len)};
    if (dims != want) {
      Fail(fmt::format("dataset '{}' has shape {}, expected {} (q_heads, prompt_len)", name,
                       hdf5::FormatDims(dims), hdf5::FormatDims(want)));
    }
    Handle attr = Attribute(dataset_.get(), name, "content_hash");
    uint64_t hash = 0;
    if (H5Aread(attr.get(), H5T_NATIVE_UINT64, &hash) < 0) {
      Fail(fmt::format("cannot read attribute 'content_hash' of '{}' as uint64", name));
    }
    return hash;
  }

  // Reads the dataset opened by OpenLayer and checks every value is finite.
  LayerPromptStats ReadLayer(int layer) {
    const std::string name = LayerDataset(layer);
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> data(shape_.q_heads,
                                                                               shape_.prompt_len);
    if (H5Dread(dataset_.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0) {
      Fail(
          fmt::format("cannot read dataset '{}': HDF5 read failed (checksum mismatch or corrupt "
                      "data)",
                      name));
    }
    LayerPromptStats stats;
    for (int h = 0; h < shape_.q_heads; ++h) {
      for (int64_t j = 0; j < shape_.prompt_len; ++j) {
        if (!std::isfinite(data(h, j))) {
          Fail(fmt::format("dataset '{}' holds {} at [{}, {}], expected finite column sums", name,
                           data(h, j), h, j));
        }
      }
      stats.column_sums.emplace_back(data.row(h).transpose());
    }
    return stats;
  }

 private:
  Handle Attribute(hid_t object, const std::string& where, const char* name) const {
    if (H5Aexists(object, name) <= 0) {
      Fail(fmt::format("attribute '{}' of '{}' is missing", name, where));
    }
    Handle attr(H5Aopen(object, name, H5P_DEFAULT));
    Handle type(H5Aget_type(attr.get()));
    Handle space(H5Aget_space(attr.get()));
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1) {
      Fail(fmt::format("attribute '{}' of '{}' has dtype {}, expected one integer", name, where,
                       hdf5::DescribeType(type.get())));
    }
    return attr;
  }

  int64_t IntAttribute(hid_t object, const std::string& where, const char* name) const {
    Handle attr = Attribute(object, where, name);
    int64_t value = 0;
    if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
      Fail(fmt::format("cannot read attribute '{}' of '{}' as int64", name, where));
    }
    return value;
  }

  bool StringAttribute(const char* name, std::string* out) const {
    if (H5Aexists(file_.get(), name) <= 0) return false;
    Handle attr(H5Aopen(file_.get(), name, H5P_DEFAULT));
    return hdf5::ReadStringAttribute(attr.get(), out);
  }

  std::filesystem::path path_;
  Handle file_;
  Handle dataset_;
  PromptStatsShape shape_;
};

// Prints the stale warning once per sidecar per process (a replay loads every layer).
void WarnStaleOnce(const std::filesystem::path& sidecar, const std::string& reason) {
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard lock(mutex);
  if (!warned.insert(sidecar.string()).second) return;
  fmt::print(stderr, "warning: {}: prompt statistics are stale ({}); recomputing them\n",
             sidecar.string(), reason);
}

}  // namespace

PromptStatsShape PromptStatsShape::Of(const TraceMeta& meta) {
  return {.layers = meta.shape.layers,
          .q_heads = meta.shape.q_heads,
          .kv_heads = meta.shape.kv_heads,
          .head_dim = meta.shape.head_dim,
          .prompt_len = meta.prompt_len,
          .total_len = meta.total_len};
}

std::filesystem::path PromptStatsPath(const std::filesystem::path& trace) {
  std::filesystem::path path = trace;
  path += ".stats.h5";
  return path;
}

uint64_t PromptContentHash(const LayerTensors& layer, int64_t prompt_len) {
  KVSIM_ASSERT(prompt_len >= 0 && prompt_len <= layer.queries.positions() &&
                   prompt_len <= layer.keys.positions(),
               "prompt length {} outside the layer's {} positions", prompt_len,
               layer.queries.positions());
  WordHasher hasher;
  for (const HeadTensor* tensor : {&layer.queries, &layer.keys}) {
    for (int h = 0; h < tensor->heads(); ++h) {
      hasher.Add(tensor->Row(h, 0), static_cast<size_t>(prompt_len * tensor->dim()));
    }
  }
  return hasher.Finish();
}

class PromptStatsWriter::Impl {
 public:
  Impl(const std::filesystem::path& trace, const PromptStatsShape& shape)
      : atomic_(PromptStatsPath(trace)), shape_(shape), added_(static_cast<size_t>(shape.layers)) {
    KVSIM_ASSERT(shape.layers >= 1 && shape.q_heads >= 1 && shape.prompt_len >= 1,
                 "prompt-stats shape must be positive");
    const std::string final_name = atomic_.final_path().string();
    hdf5::SilenceErrors();
    std::lock_guard lock(Hdf5Mutex());
    const Handle access = hdf5::ChecksummedMetadataAccess();
    file_ =
        Handle(H5Fcreate(atomic_.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()));
    if (!file_.valid()) {
      ThrowInputError("{}: cannot create HDF5 file '{}'", final_name, atomic_.temp_path().string());
    }
    bool ok = hdf5::WriteStringAttribute(file_.get(), "format", kFormat) &&
              hdf5::WriteInt64Attribute(file_.get(), "format_version", kFormatVersion) &&
              hdf5::WriteStringAttribute(file_.get(), "trace_file", trace.filename().string()) &&
              hdf5::WriteStringAttribute(file_.get(), "statistic", kStatistic) &&
              hdf5::WriteStringAttribute(file_.get(), "content_hash", kHash);
    for (const ShapeField& f : kShapeFields) {
      ok = ok && hdf5::WriteInt64Attribute(file_.get(), f.name, Get(shape_, f));
    }
    Handle layers(H5Gcreate2(file_.get(), "/layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (!ok || !layers.valid()) ThrowInputError("{}: HDF5 failed writing the header", final_name);
  }

  ~Impl() {
    std::lock_guard lock(Hdf5Mutex());
    file_.Reset();
  }

  void AddLayer(int layer, uint64_t content_hash, const LayerPromptStats& stats) {
    KVSIM_ASSERT(file_.valid(), "PromptStatsWriter::AddLayer after Commit");
    KVSIM_ASSERT(layer >= 0 && layer < shape_.layers, "layer {} out of range [0, {})", layer,
                 shape_.layers);
    KVSIM_ASSERT(!added_[static_cast<size_t>(layer)], "layer {} added twice", layer);
    KVSIM_ASSERT(stats.column_sums.size() == static_cast<size_t>(shape_.q_heads),
                 "{} column-sum vectors, expected {}", stats.column_sums.size(), shape_.q_heads);
    RowMatrixXf data(shape_.q_heads, shape_.prompt_len);
    for (int h = 0; h < shape_.q_heads; ++h) {
      const Eigen::VectorXf& sums = stats.column_sums[static_cast<size_t>(h)];
      KVSIM_ASSERT(sums.size() == shape_.prompt_len && sums.allFinite(),
                   "column sums of head {}: {} values (expected {}) or not finite", h, sums.size(),
                   shape_.prompt_len);
      data.row(h) = sums.transpose();
    }
    std::lock_guard lock(Hdf5Mutex());
    const std::string group_name = fmt::format("/layers/{}", layer);
    Handle group(
        H5Gcreate2(file_.get(), group_name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    const hsize_t dims[2] = {static_cast<hsize_t>(shape_.q_heads),
                             static_cast<hsize_t>(shape_.prompt_len)};
    Handle space(H5Screate_simple(2, dims, nullptr));
    // One chunk per head row, checksummed (Fletcher32) like the trace's datasets: a corrupted
    // sidecar is then an error, not silently wrong sums.
    const hsize_t chunk[2] = {1, dims[1]};
    Handle plist(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(plist.get(), 2, chunk);
    H5Pset_fletcher32(plist.get());
    Handle dataset(H5Dcreate2(group.get(), "column_sums", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                              plist.get(), H5P_DEFAULT));
    const bool ok = group.valid() && dataset.valid() &&
                    H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                             data.data()) >= 0 &&
                    WriteUint64Attribute(dataset.get(), "content_hash", content_hash);
    if (!ok) {
      ThrowInputError("{}: HDF5 failed writing '{}' (disk full?)", atomic_.final_path().string(),
                      LayerDataset(layer));
    }
    added_[static_cast<size_t>(layer)] = true;
  }

  void Commit() {
    KVSIM_ASSERT(file_.valid(), "PromptStatsWriter::Commit called twice");
    for (size_t l = 0; l < added_.size(); ++l) {
      KVSIM_ASSERT(added_[l], "PromptStatsWriter::Commit without layer {}", l);
    }
    bool ok = false;
    {
      std::lock_guard lock(Hdf5Mutex());
      ok = H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) >= 0;
      ok = file_.Reset() && ok;
    }
    if (!ok) {
      ThrowInputError("{}: HDF5 failed while closing the file (disk full?)",
                      atomic_.final_path().string());
    }
    atomic_.Commit();
  }

 private:
  AtomicPath atomic_;
  PromptStatsShape shape_;
  std::vector<bool> added_;
  Handle file_;
};

PromptStatsWriter::PromptStatsWriter(const std::filesystem::path& trace,
                                     const PromptStatsShape& shape)
    : impl_(std::make_unique<Impl>(trace, shape)) {}
PromptStatsWriter::~PromptStatsWriter() = default;
void PromptStatsWriter::AddLayer(int layer, uint64_t content_hash, const LayerPromptStats& stats) {
  impl_->AddLayer(layer, content_hash, stats);
}
void PromptStatsWriter::Commit() { impl_->Commit(); }

std::optional<LayerPromptStats> LoadPromptStats(const std::filesystem::path& trace,
                                                int layer,
                                                const LayerTensors& tensors,
                                                int64_t prompt_len,
                                                OnStale on_stale) {
  const PromptStatsShape expected = {.layers = 0,  // unknown from one layer: not compared
                                     .q_heads = tensors.queries.heads(),
                                     .kv_heads = tensors.keys.heads(),
                                     .head_dim = tensors.queries.dim(),
                                     .prompt_len = prompt_len,
                                     .total_len = tensors.queries.positions()};
  std::error_code ec;
  if (!std::filesystem::exists(PromptStatsPath(trace), ec)) return std::nullopt;
  return LoadPromptStats(trace, layer, expected, PromptContentHash(tensors, prompt_len), on_stale);
}

std::optional<LayerPromptStats> LoadPromptStats(const std::filesystem::path& trace,
                                                int layer,
                                                const PromptStatsShape& expected,
                                                uint64_t content_hash,
                                                OnStale on_stale) {
  const std::filesystem::path path = PromptStatsPath(trace);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  KVSIM_ASSERT(layer >= 0, "layer {} is negative", layer);
  const auto stale = [&](const std::string& reason) -> std::optional<LayerPromptStats> {
    switch (on_stale) {
      case OnStale::kWarn:
        WarnStaleOnce(path, reason);
        break;
      case OnStale::kQuiet:
        break;
      case OnStale::kError:
        ThrowInputError("{}: prompt statistics are stale ({}); run `kvsim stats {}` to recompute",
                        path.string(), reason, trace.string());
    }
    return std::nullopt;
  };

  std::lock_guard lock(Hdf5Mutex());
  SidecarReader reader(path);
  reader.Open();
  for (const ShapeField& f : kShapeFields) {
    const int64_t want = Get(expected, f);
    const int64_t have = Get(reader.shape(), f);
    if (want != 0 && want != have) {  // layers = 0: not compared
      return stale(fmt::format("{} is {}, the trace's is {}", f.name, have, want));
    }
  }
  if (layer >= reader.shape().layers) {
    return stale(
        fmt::format("it has {} layers, the trace has layer {}", reader.shape().layers, layer));
  }
  const uint64_t stored = reader.OpenLayer(layer);
  if (stored != content_hash) {
    return stale(fmt::format("layer {} content hash is {:#018x}, the trace's is {:#018x}", layer,
                             stored, content_hash));
  }
  return reader.ReadLayer(layer);
}

}  // namespace kvsim::traces
