#include "traces/trace_io.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/version.h"
#include "traces/hdf5_util.h"

namespace kvsim::traces {
namespace {

using hdf5::Handle;
using hdf5::Hdf5Mutex;

constexpr const char* kFormatName = "kvsim-trace";
constexpr int64_t kFormatVersion = 1;

std::string LayerPath(int layer, const char* tensor) {
  return fmt::format("/layers/{}/{}", layer, tensor);
}

size_t ElementBytes(StorageType storage) { return storage == StorageType::kFloat16 ? 2 : 4; }

// Encodes n floats into the storage type. float16 rounds to nearest even (Eigen::half, the
// IEEE 754 default rounding, as numpy's astype(float16) does).
void Encode(const float* src, size_t n, StorageType storage, uint8_t* dst) {
  if (storage == StorageType::kFloat32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint16_t bits = Eigen::half(src[i]).x;
    std::memcpy(dst + 2 * i, &bits, 2);
  }
}

void DecodeHalf(const uint16_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) {
    dst[i] = static_cast<float>(Eigen::half(Eigen::half_impl::raw_uint16_to_half(src[i])));
  }
}

// The five per-layer tensors in file order, with their dataset names and head counts.
struct TensorSpec {
  const char* name;
  bool pre_rope;
  bool query;  // q_heads rows (else kv_heads)
};
constexpr TensorSpec kTensors[] = {{"q", false, true},
                                   {"k", false, false},
                                   {"v", false, false},
                                   {"q_pre_rope", true, true},
                                   {"k_pre_rope", true, false}};

const HeadTensor& TensorOf(const LayerTensors& l, int index) {
  switch (index) {
    case 0:
      return l.queries;
    case 1:
      return l.keys;
    case 2:
      return l.values;
    case 3:
      return l.queries_pre_rope;
    default:
      return l.keys_pre_rope;
  }
}
HeadTensor& TensorOf(LayerTensors& l, int index) {
  return const_cast<HeadTensor&>(TensorOf(static_cast<const LayerTensors&>(l), index));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

class TraceWriter::Impl {
 public:
  Impl(const std::string& path, const TraceMeta& meta, TraceWriterOptions options)
      : path_(path), meta_(meta), options_(options), atomic_(path) {
    meta_.shape.Validate(path);
    if (options_.chunk_positions < 1) {
      ThrowInputError("{}: chunk_positions is {}, expected >= 1", path, options_.chunk_positions);
    }
    if (options_.compression_level < 0 || options_.compression_level > 9) {
      ThrowInputError("{}: compression_level is {}, expected 0-9", path,
                      options_.compression_level);
    }
    meta_.storage = options_.storage;
    meta_.has_pre_rope = options_.with_pre_rope;
    meta_.token_ids.clear();
    meta_.token_text.clear();
    hdf5::SilenceErrors();
    std::lock_guard lock(Hdf5Mutex());
    file_type_ = options_.storage == StorageType::kFloat16 ? hdf5::MakeFloat16Type()
                                                           : Handle(H5Tcopy(H5T_IEEE_F32LE));
    file_ = Handle(H5Fcreate(atomic_.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    if (!file_.valid()) {
      ThrowInputError("{}: cannot create HDF5 file '{}'", path, atomic_.temp_path().string());
    }
    Handle layers_group(H5Gcreate2(file_.get(), "/layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    const int d = meta_.shape.head_dim;
    for (int l = 0; l < meta_.shape.layers; ++l) {
      Handle group(H5Gcreate2(file_.get(), fmt::format("/layers/{}", l).c_str(), H5P_DEFAULT,
                              H5P_DEFAULT, H5P_DEFAULT));
      if (!group.valid()) ThrowInputError("{}: cannot create group '/layers/{}'", path, l);
      for (int t = 0; t < 5; ++t) {
        if (kTensors[t].pre_rope && !options_.with_pre_rope) continue;
        const int heads = kTensors[t].query ? meta_.shape.q_heads : meta_.shape.kv_heads;
        sinks_.push_back(MakeSink(l, t, heads, d));
      }
    }
  }

  ~Impl() {
    std::lock_guard lock(Hdf5Mutex());
    sinks_.clear();
    file_.Reset();
  }

  void Append(std::span<const int32_t> token_ids,
              std::span<const std::string> token_text,
              std::span<const LayerTensors> layers) {
    KVSIM_ASSERT(file_.valid(), "{}: TraceWriter::Append after Commit", path_);
    const int64_t n = static_cast<int64_t>(token_ids.size());
    if (!token_text.empty() && static_cast<int64_t>(token_text.size()) != n) {
      ThrowInputError("{}: Append got {} token texts for {} positions, expected {} or none", path_,
                      token_text.size(), n, n);
    }
    const bool with_text = !token_text.empty();
    if (n > 0 && positions_written() > 0 && with_text != !meta_.token_text.empty()) {
      ThrowInputError("{}: Append {} token text but earlier blocks {}; expected all or none", path_,
                      with_text ? "has" : "lacks", with_text ? "did not" : "did");
    }
    if (static_cast<int>(layers.size()) != meta_.shape.layers) {
      ThrowInputError("{}: Append got {} layers, expected {} (model layers)", path_, layers.size(),
                      meta_.shape.layers);
    }
    for (const Sink& sink : sinks_) {
      const HeadTensor& t = TensorOf(layers[static_cast<size_t>(sink.layer)], sink.tensor);
      if (t.heads() != sink.heads || t.positions() != n || t.dim() != meta_.shape.head_dim) {
        ThrowInputError("{}: Append got '{}' of shape [{}, {}, {}], expected [{}, {}, {}]", path_,
                        sink.name, t.heads(), t.positions(), t.dim(), sink.heads, n,
                        meta_.shape.head_dim);
      }
    }
    meta_.token_ids.insert(meta_.token_ids.end(), token_ids.begin(), token_ids.end());
    if (with_text) {
      meta_.token_text.insert(meta_.token_text.end(), token_text.begin(), token_text.end());
    }
    std::lock_guard lock(Hdf5Mutex());
    const size_t d = static_cast<size_t>(meta_.shape.head_dim);
    const size_t elem = ElementBytes(options_.storage);
    const int64_t chunk = options_.chunk_positions;
    int64_t offset = 0;
    while (offset < n) {
      const int64_t take = std::min(n - offset, chunk - buffered_);
      for (Sink& sink : sinks_) {
        const HeadTensor& t = TensorOf(layers[static_cast<size_t>(sink.layer)], sink.tensor);
        for (int h = 0; h < sink.heads; ++h) {
          uint8_t* dst =
              sink.pending.data() + (static_cast<size_t>(h * chunk + buffered_) * d) * elem;
          Encode(t.Row(h, offset), static_cast<size_t>(take) * d, options_.storage, dst);
        }
      }
      buffered_ += take;
      offset += take;
      if (buffered_ == chunk) Flush();
    }
  }

  void SetPromptLength(int64_t prompt_len) { meta_.prompt_len = prompt_len; }
  void SetSegments(std::vector<Segment> segments) { meta_.segments = std::move(segments); }
  int64_t positions_written() const { return written_ + buffered_; }

  void Commit() {
    KVSIM_ASSERT(file_.valid(), "{}: TraceWriter::Commit called twice", path_);
    const int64_t total = positions_written();
    meta_.total_len = total;
    if (meta_.prompt_len < 1 || meta_.prompt_len > total) {
      Abort();
      ThrowInputError("{}: prompt_len is {}, expected 1 <= prompt_len <= total_len = {}", path_,
                      meta_.prompt_len, total);
    }
    for (size_t i = 0; i < meta_.segments.size(); ++i) {
      const Segment& s = meta_.segments[i];
      if (s.begin < 0 || s.begin >= s.end || s.end > total) {
        Abort();
        ThrowInputError("{}: segment {} is [{}, {}), expected 0 <= begin < end <= total_len = {}",
                        path_, i, s.begin, s.end, total);
      }
    }
    std::lock_guard lock(Hdf5Mutex());
    Flush();
    bool ok = WriteTokens() && WriteSegments() && WriteRootAttributes();
    sinks_.clear();
    ok = file_.Reset() && ok;
    if (!ok) {
      Abort();
      ThrowInputError("{}: HDF5 failed while writing the trace (disk full?)", path_);
    }
    atomic_.Commit();
  }

 private:
  // One dataset being written, with a chunk-row of positions buffered in file encoding so every
  // chunk is compressed exactly once (appending one position at a time would otherwise
  // recompress a chunk per position or thrash HDF5's 1 MiB chunk cache).
  struct Sink {
    int layer = 0;
    int tensor = 0;  // index into kTensors
    int heads = 0;
    std::string name;
    Handle dataset;
    std::vector<uint8_t> pending;  // [heads, chunk_positions, d], first buffered_ rows valid
  };

  Sink MakeSink(int layer, int tensor, int heads, int d) {
    Sink sink;
    sink.layer = layer;
    sink.tensor = tensor;
    sink.heads = heads;
    sink.name = LayerPath(layer, kTensors[tensor].name);
    const hsize_t dims[3] = {static_cast<hsize_t>(heads), 0, static_cast<hsize_t>(d)};
    const hsize_t max_dims[3] = {static_cast<hsize_t>(heads), H5S_UNLIMITED,
                                 static_cast<hsize_t>(d)};
    const hsize_t chunk[3] = {1, static_cast<hsize_t>(options_.chunk_positions),
                              static_cast<hsize_t>(d)};
    Handle space(H5Screate_simple(3, dims, max_dims));
    Handle plist(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(plist.get(), 3, chunk);
    if (options_.compression_level > 0) {
      H5Pset_shuffle(plist.get());
      H5Pset_deflate(plist.get(), static_cast<unsigned>(options_.compression_level));
    }
    sink.dataset = Handle(H5Dcreate2(file_.get(), sink.name.c_str(), file_type_.get(), space.get(),
                                     H5P_DEFAULT, plist.get(), H5P_DEFAULT));
    if (!sink.dataset.valid()) ThrowInputError("{}: cannot create dataset '{}'", path_, sink.name);
    sink.pending.resize(static_cast<size_t>(heads) * static_cast<size_t>(options_.chunk_positions) *
                        static_cast<size_t>(d) * ElementBytes(options_.storage));
    return sink;
  }

  // Writes the buffered positions to every dataset. Caller holds Hdf5Mutex().
  void Flush() {
    if (buffered_ == 0) return;
    const hsize_t d = static_cast<hsize_t>(meta_.shape.head_dim);
    const hsize_t total = static_cast<hsize_t>(written_ + buffered_);
    for (Sink& sink : sinks_) {
      const hsize_t heads = static_cast<hsize_t>(sink.heads);
      const hsize_t new_dims[3] = {heads, total, d};
      const hsize_t mem_dims[3] = {heads, static_cast<hsize_t>(options_.chunk_positions), d};
      const hsize_t zero[3] = {0, 0, 0};
      const hsize_t file_start[3] = {0, static_cast<hsize_t>(written_), 0};
      const hsize_t count[3] = {heads, static_cast<hsize_t>(buffered_), d};
      bool ok = H5Dset_extent(sink.dataset.get(), new_dims) >= 0;
      Handle file_space(H5Dget_space(sink.dataset.get()));
      Handle mem_space(H5Screate_simple(3, mem_dims, nullptr));
      ok = ok &&
           H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, file_start, nullptr, count,
                               nullptr) >= 0 &&
           H5Sselect_hyperslab(mem_space.get(), H5S_SELECT_SET, zero, nullptr, count, nullptr) >=
               0 &&
           H5Dwrite(sink.dataset.get(), file_type_.get(), mem_space.get(), file_space.get(),
                    H5P_DEFAULT, sink.pending.data()) >= 0;
      if (!ok) {
        ThrowInputError("{}: HDF5 failed writing dataset '{}' (disk full?)", path_, sink.name);
      }
    }
    written_ += buffered_;
    buffered_ = 0;
  }

  bool WriteTokens() {
    Handle group(H5Gcreate2(file_.get(), "/tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    const hsize_t n = meta_.token_ids.size();
    Handle space(H5Screate_simple(1, &n, nullptr));
    Handle ids(H5Dcreate2(group.get(), "ids", H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                          H5P_DEFAULT));
    if (!ids.valid() || H5Dwrite(ids.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                 meta_.token_ids.data()) < 0) {
      return false;
    }
    return meta_.token_text.empty() ||
           hdf5::WriteStringDataset(group.get(), "text", meta_.token_text);
  }

  bool WriteSegments() {
    if (meta_.segments.empty()) return true;
    Handle group(H5Gcreate2(file_.get(), "/segments", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    std::vector<int64_t> begin, end;
    std::vector<int32_t> turn;
    std::vector<std::string> role;
    for (const Segment& s : meta_.segments) {
      begin.push_back(s.begin);
      end.push_back(s.end);
      turn.push_back(s.turn);
      role.push_back(s.role);
    }
    const hsize_t n = meta_.segments.size();
    Handle space(H5Screate_simple(1, &n, nullptr));
    auto write = [&](const char* name, hid_t file_type, hid_t mem_type, const void* data) {
      Handle ds(H5Dcreate2(group.get(), name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                           H5P_DEFAULT));
      return ds.valid() && H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    };
    return write("begin", H5T_STD_I64LE, H5T_NATIVE_INT64, begin.data()) &&
           write("end", H5T_STD_I64LE, H5T_NATIVE_INT64, end.data()) &&
           write("turn", H5T_STD_I32LE, H5T_NATIVE_INT32, turn.data()) &&
           hdf5::WriteStringDataset(group.get(), "role", role);
  }

  bool WriteRootAttributes() {
    const hid_t root = file_.get();
    const models::ModelShape& s = meta_.shape;
    return hdf5::WriteStringAttribute(root, "format", kFormatName) &&
           hdf5::WriteInt64Attribute(root, "format_version", kFormatVersion) &&
           hdf5::WriteStringAttribute(root, "kvsim_version", kVersion) &&
           hdf5::WriteStringAttribute(root, "model_name", s.name) &&
           hdf5::WriteInt64Attribute(root, "layers", s.layers) &&
           hdf5::WriteInt64Attribute(root, "q_heads", s.q_heads) &&
           hdf5::WriteInt64Attribute(root, "kv_heads", s.kv_heads) &&
           hdf5::WriteInt64Attribute(root, "head_dim", s.head_dim) &&
           hdf5::WriteDoubleAttribute(root, "rope_theta", s.rope_theta) &&
           hdf5::WriteInt64Attribute(root, "prompt_len", meta_.prompt_len) &&
           hdf5::WriteInt64Attribute(root, "total_len", meta_.total_len) &&
           hdf5::WriteStringAttribute(root, "source", meta_.source);
  }

  // Closes the file and deletes the temporary; the writer can then only be destroyed.
  void Abort() {
    std::lock_guard lock(Hdf5Mutex());
    sinks_.clear();
    file_.Reset();
    std::error_code ec;
    std::filesystem::remove(atomic_.temp_path(), ec);
  }

  std::string path_;
  TraceMeta meta_;
  TraceWriterOptions options_;
  AtomicPath atomic_;
  Handle file_type_;
  Handle file_;
  std::vector<Sink> sinks_;
  int64_t written_ = 0;   // positions already in the datasets
  int64_t buffered_ = 0;  // positions in Sink::pending, < chunk_positions
};

TraceWriter::TraceWriter(const std::string& path, const TraceMeta& meta, TraceWriterOptions options)
    : impl_(std::make_unique<Impl>(path, meta, options)) {}
TraceWriter::~TraceWriter() = default;

void TraceWriter::Append(std::span<const int32_t> token_ids,
                         std::span<const std::string> token_text,
                         std::span<const LayerTensors> layers) {
  impl_->Append(token_ids, token_text, layers);
}
void TraceWriter::SetPromptLength(int64_t prompt_len) { impl_->SetPromptLength(prompt_len); }
void TraceWriter::SetSegments(std::vector<Segment> segments) {
  impl_->SetSegments(std::move(segments));
}
int64_t TraceWriter::positions_written() const { return impl_->positions_written(); }
void TraceWriter::Commit() { impl_->Commit(); }

void WriteTrace(const std::string& path, const Trace& trace, TraceWriterOptions options) {
  const TraceMeta& meta = trace.meta();
  options.with_pre_rope = meta.has_pre_rope;
  TraceWriter writer(path, meta, options);
  std::vector<LayerTensors> layers;
  layers.reserve(static_cast<size_t>(trace.num_layers()));
  for (int l = 0; l < trace.num_layers(); ++l) layers.push_back(trace.layer(l));
  writer.Append(meta.token_ids, meta.token_text, layers);
  writer.SetPromptLength(meta.prompt_len);
  writer.SetSegments(meta.segments);
  writer.Commit();
}

// ---------------------------------------------------------------------------------------------
// Reader

class TraceReader::Impl {
 public:
  explicit Impl(const std::string& path) : path_(path) {
    hdf5::SilenceErrors();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      ThrowInputError("{}: no such file (expected a kvsim trace, traces/FORMAT.md)", path);
    }
    file_bytes_ = std::filesystem::file_size(path, ec);
    std::lock_guard lock(Hdf5Mutex());
    if (H5Fis_hdf5(path.c_str()) <= 0) {
      ThrowInputError("{}: not an HDF5 file (expected a kvsim trace, traces/FORMAT.md)", path);
    }
    file_ = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!file_.valid()) {
      ThrowInputError("{}: HDF5 cannot open the file (truncated or corrupt?)", path);
    }
    float16_ = hdf5::MakeFloat16Type();
    ReadRootAttributes();
    ReadTokens();
    ReadSegments();
    CheckLayers();
    CheckGateFlags();
    CheckFinite();
  }

  ~Impl() {
    std::lock_guard lock(Hdf5Mutex());
    float16_.Reset();
    file_.Reset();
  }

  const std::string& path() const { return path_; }
  const TraceMeta& meta() const { return meta_; }
  uint64_t file_bytes() const { return file_bytes_; }
  bool has_gate_flags() const { return has_gate_flags_; }

  LayerTensors ReadLayer(int layer) const {
    CheckLayerIndex(layer);
    LayerTensors out;
    for (int t = 0; t < 5; ++t) {
      if (kTensors[t].pre_rope && !meta_.has_pre_rope) continue;
      const int heads = kTensors[t].query ? meta_.shape.q_heads : meta_.shape.kv_heads;
      HeadTensor& tensor = TensorOf(out, t);
      tensor = HeadTensor(heads, meta_.total_len, meta_.shape.head_dim);
      ReadHeads(LayerPath(layer, kTensors[t].name), 0, heads, tensor.data());
    }
    return out;
  }

  KvHeadSlice ReadSlice(int layer, int kv_head) const {
    CheckLayerIndex(layer);
    KVSIM_ASSERT(kv_head >= 0 && kv_head < meta_.shape.kv_heads, "kv_head {} out of range [0, {})",
                 kv_head, meta_.shape.kv_heads);
    const int g = meta_.shape.GroupSize();
    const int64_t t = meta_.total_len;
    const int d = meta_.shape.head_dim;
    KvHeadSlice slice;
    slice.layer = layer;
    slice.kv_head = kv_head;
    for (int i = 0; i < g; ++i) {
      slice.queries.emplace_back(t, d);
      ReadHeads(LayerPath(layer, "q"), kv_head * g + i, 1, slice.queries.back().data());
    }
    slice.keys.resize(t, d);
    ReadHeads(LayerPath(layer, "k"), kv_head, 1, slice.keys.data());
    slice.values.resize(t, d);
    ReadHeads(LayerPath(layer, "v"), kv_head, 1, slice.values.data());
    return slice;
  }

  std::vector<uint8_t> ReadGateFlags(int layer, int kv_head) const {
    CheckLayerIndex(layer);
    KVSIM_ASSERT(has_gate_flags_, "{}: the trace has no /gate_flags", path_);
    KVSIM_ASSERT(kv_head >= 0 && kv_head < meta_.shape.kv_heads, "kv_head {} out of range [0, {})",
                 kv_head, meta_.shape.kv_heads);
    std::vector<uint8_t> flags(static_cast<size_t>(meta_.total_len));
    std::lock_guard lock(Hdf5Mutex());
    Handle ds(H5Dopen2(file_.get(), "/gate_flags", H5P_DEFAULT));
    const hsize_t start[3] = {static_cast<hsize_t>(layer), static_cast<hsize_t>(kv_head), 0};
    const hsize_t count[3] = {1, 1, static_cast<hsize_t>(meta_.total_len)};
    const hsize_t n = count[2];
    Handle file_space(H5Dget_space(ds.get()));
    Handle mem_space(H5Screate_simple(1, &n, nullptr));
    const bool ok = H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count,
                                        nullptr) >= 0 &&
                    H5Dread(ds.get(), H5T_NATIVE_UINT8, mem_space.get(), file_space.get(),
                            H5P_DEFAULT, flags.data()) >= 0;
    if (!ok) ThrowInputError("{}: HDF5 failed reading dataset '/gate_flags'", path_);
    return flags;
  }

 private:
  void CheckLayerIndex(int layer) const {
    KVSIM_ASSERT(layer >= 0 && layer < meta_.shape.layers, "layer {} out of range [0, {})", layer,
                 meta_.shape.layers);
  }

  // Opens an attribute of the root group, or throws naming it and what it should hold.
  Handle OpenAttribute(const char* name, const char* expected) const {
    if (H5Aexists(file_.get(), name) <= 0) {
      ThrowInputError("{}: attribute '{}' of '/' is missing, expected {}", path_, name, expected);
    }
    Handle attr(H5Aopen(file_.get(), name, H5P_DEFAULT));
    Handle space(H5Aget_space(attr.get()));
    if (H5Sget_simple_extent_npoints(space.get()) != 1) {
      ThrowInputError("{}: attribute '{}' of '/' holds {} values, expected one: {}", path_, name,
                      H5Sget_simple_extent_npoints(space.get()), expected);
    }
    return attr;
  }

  Handle AttributeOfClass(const char* name,
                          const char* expected,
                          std::initializer_list<H5T_class_t> classes) const {
    Handle attr = OpenAttribute(name, expected);
    Handle type(H5Aget_type(attr.get()));
    const H5T_class_t cls = H5Tget_class(type.get());
    if (std::find(classes.begin(), classes.end(), cls) == classes.end()) {
      ThrowInputError("{}: attribute '{}' of '/' has dtype {}, expected {}", path_, name,
                      hdf5::DescribeType(type.get()), expected);
    }
    return attr;
  }

  int64_t IntAttribute(const char* name, const char* expected) const {
    Handle attr = AttributeOfClass(name, expected, {H5T_INTEGER});
    int64_t value = 0;
    if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
      ThrowInputError("{}: cannot read attribute '{}' of '/'", path_, name);
    }
    return value;
  }

  double FloatAttribute(const char* name, const char* expected) const {
    Handle attr = AttributeOfClass(name, expected, {H5T_FLOAT, H5T_INTEGER});
    double value = 0;
    if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) < 0) {
      ThrowInputError("{}: cannot read attribute '{}' of '/'", path_, name);
    }
    return value;
  }

  std::string StringAttribute(const char* name, const char* expected) const {
    Handle attr = AttributeOfClass(name, expected, {H5T_STRING});
    std::string value;
    if (!hdf5::ReadStringAttribute(attr.get(), &value)) {
      ThrowInputError("{}: cannot read attribute '{}' of '/'", path_, name);
    }
    return value;
  }

  void ReadRootAttributes() {
    const std::string format = StringAttribute("format", "the string \"kvsim-trace\"");
    if (format != kFormatName) {
      ThrowInputError("{}: attribute 'format' of '/' is \"{}\", expected \"{}\"", path_, format,
                      kFormatName);
    }
    const int64_t version = IntAttribute("format_version", "an integer (1)");
    if (version != kFormatVersion) {
      ThrowInputError("{}: attribute 'format_version' of '/' is {}, expected {}", path_, version,
                      kFormatVersion);
    }
    models::ModelShape& s = meta_.shape;
    s.name = StringAttribute("model_name", "a string (model name)");
    auto positive_int = [&](const char* name, const char* what) {
      const int64_t v = IntAttribute(name, what);
      if (v < 1 || v > (int64_t{1} << 30)) {
        ThrowInputError("{}: attribute '{}' of '/' is {}, expected {} >= 1", path_, name, v, what);
      }
      return static_cast<int>(v);
    };
    s.layers = positive_int("layers", "an integer (number of layers)");
    s.q_heads = positive_int("q_heads", "an integer (query heads per layer)");
    s.kv_heads = positive_int("kv_heads", "an integer (KV heads per layer)");
    s.head_dim = positive_int("head_dim", "an integer (head dimension)");
    s.rope_theta = FloatAttribute("rope_theta", "a float (RoPE base theta)");
    s.Validate(path_);
    meta_.prompt_len = IntAttribute("prompt_len", "an integer (prompt positions)");
    meta_.total_len = IntAttribute("total_len", "an integer (prompt + decoded positions)");
    if (meta_.prompt_len < 1 || meta_.prompt_len > meta_.total_len) {
      ThrowInputError(
          "{}: attributes prompt_len = {} and total_len = {}, expected 1 <= prompt_len <= "
          "total_len",
          path_, meta_.prompt_len, meta_.total_len);
    }
    if (H5Aexists(file_.get(), "source") > 0) {
      meta_.source = StringAttribute("source", "a string (trace origin)");
    }
  }

  // Opens a dataset, or throws naming it and `expected`.
  Handle OpenDataset(const std::string& name, const std::string& expected) const {
    if (!hdf5::Exists(file_.get(), name)) {
      ThrowInputError("{}: dataset '{}' is missing, expected {}", path_, name, expected);
    }
    Handle ds(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT));
    if (!ds.valid()) {
      ThrowInputError("{}: '{}' is not a readable dataset, expected {}", path_, name, expected);
    }
    return ds;
  }

  void CheckDims(hid_t ds,
                 const std::string& name,
                 const std::vector<hsize_t>& expected,
                 const char* dim_names) const {
    const std::vector<hsize_t> dims = hdf5::Dims(ds);
    if (dims != expected) {
      ThrowInputError("{}: dataset '{}' has shape {}, expected {} ({})", path_, name,
                      hdf5::FormatDims(dims), hdf5::FormatDims(expected), dim_names);
    }
  }

  void CheckIntegerType(hid_t ds, const std::string& name, const char* expected) const {
    Handle type(H5Dget_type(ds));
    if (H5Tget_class(type.get()) != H5T_INTEGER) {
      ThrowInputError("{}: dataset '{}' has dtype {}, expected {}", path_, name,
                      hdf5::DescribeType(type.get()), expected);
    }
  }

  void ReadTokens() {
    const hsize_t t = static_cast<hsize_t>(meta_.total_len);
    {
      const std::string name = "/tokens/ids";
      Handle ds = OpenDataset(name, "int32 [total_len] token ids");
      CheckIntegerType(ds.get(), name, "an integer type (int32 token ids)");
      CheckDims(ds.get(), name, {t}, "total_len");
      meta_.token_ids.resize(t);
      if (H5Dread(ds.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                  meta_.token_ids.data()) < 0) {
        ThrowInputError("{}: cannot read dataset '{}' (corrupt?)", path_, name);
      }
      for (size_t i = 0; i < meta_.token_ids.size(); ++i) {
        if (meta_.token_ids[i] < 0) {
          ThrowInputError("{}: dataset '{}' has token id {} at position {}, expected >= 0", path_,
                          name, meta_.token_ids[i], i);
        }
      }
    }
    const std::string text_name = "/tokens/text";
    if (hdf5::Exists(file_.get(), text_name)) {
      Handle ds = OpenDataset(text_name, "string [total_len]");
      CheckDims(ds.get(), text_name, {t}, "total_len");
      if (!hdf5::ReadStringDataset(ds.get(), &meta_.token_text)) {
        Handle type(H5Dget_type(ds.get()));
        ThrowInputError("{}: dataset '{}' has dtype {}, expected string (UTF-8)", path_, text_name,
                        hdf5::DescribeType(type.get()));
      }
    }
  }

  void ReadSegments() {
    if (!hdf5::Exists(file_.get(), "/segments")) return;
    Handle begin = OpenDataset("/segments/begin", "int64 [segments]");
    CheckIntegerType(begin.get(), "/segments/begin", "an integer type (int64)");
    const std::vector<hsize_t> dims = hdf5::Dims(begin.get());
    if (dims.size() != 1) {
      ThrowInputError("{}: dataset '/segments/begin' has shape {}, expected 1-D [segments]", path_,
                      hdf5::FormatDims(dims));
    }
    const size_t n = dims[0];
    auto read_ints = [&](const char* name, hid_t mem_type, void* out) {
      Handle ds = OpenDataset(name, "an integer [segments] dataset");
      CheckIntegerType(ds.get(), name, "an integer type");
      CheckDims(ds.get(), name, {n}, "segments, the length of '/segments/begin'");
      if (H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        ThrowInputError("{}: cannot read dataset '{}' (corrupt?)", path_, name);
      }
    };
    std::vector<int64_t> b(n), e(n);
    std::vector<int32_t> turn(n);
    read_ints("/segments/begin", H5T_NATIVE_INT64, b.data());
    read_ints("/segments/end", H5T_NATIVE_INT64, e.data());
    read_ints("/segments/turn", H5T_NATIVE_INT32, turn.data());
    Handle role_ds = OpenDataset("/segments/role", "string [segments]");
    CheckDims(role_ds.get(), "/segments/role", {n}, "segments, the length of '/segments/begin'");
    std::vector<std::string> role;
    if (!hdf5::ReadStringDataset(role_ds.get(), &role)) {
      ThrowInputError(
          "{}: dataset '/segments/role' is not readable as strings, expected string "
          "[segments]",
          path_);
    }
    for (size_t i = 0; i < n; ++i) {
      if (b[i] < 0 || b[i] >= e[i] || e[i] > meta_.total_len) {
        ThrowInputError(
            "{}: segment {} ('/segments/begin', '/segments/end') is [{}, {}), "
            "expected 0 <= begin < end <= total_len = {}",
            path_, i, b[i], e[i], meta_.total_len);
      }
      meta_.segments.push_back(Segment{b[i], e[i], turn[i], role[i]});
    }
  }

  // Checks every layer dataset's presence, dtype and shape; fixes meta_.storage and
  // meta_.has_pre_rope from layer 0.
  void CheckLayers() {
    meta_.has_pre_rope = hdf5::Exists(file_.get(), LayerPath(0, "q_pre_rope"));
    std::optional<StorageType> storage;
    std::string storage_from;
    const hsize_t t = static_cast<hsize_t>(meta_.total_len);
    const hsize_t d = static_cast<hsize_t>(meta_.shape.head_dim);
    for (int l = 0; l < meta_.shape.layers; ++l) {
      for (int i = 0; i < 5; ++i) {
        const TensorSpec& spec = kTensors[i];
        const std::string name = LayerPath(l, spec.name);
        if (spec.pre_rope && !meta_.has_pre_rope) {
          if (hdf5::Exists(file_.get(), name)) {
            ThrowInputError(
                "{}: dataset '{}' is present but '{}' is not; expected pre-RoPE "
                "tensors in every layer or in none",
                path_, name, LayerPath(0, "q_pre_rope"));
          }
          continue;
        }
        const hsize_t heads =
            static_cast<hsize_t>(spec.query ? meta_.shape.q_heads : meta_.shape.kv_heads);
        const std::vector<hsize_t> expected = {heads, t, d};
        const char* dim_names =
            spec.query ? "q_heads, total_len, head_dim" : "kv_heads, total_len, head_dim";
        Handle ds = OpenDataset(
            name, fmt::format("float16/float32 {} ({})", hdf5::FormatDims(expected), dim_names));
        Handle type(H5Dget_type(ds.get()));
        std::optional<StorageType> found;
        if (H5Tequal(type.get(), float16_.get()) > 0) found = StorageType::kFloat16;
        if (H5Tequal(type.get(), H5T_IEEE_F32LE) > 0) found = StorageType::kFloat32;
        if (!found) {
          ThrowInputError(
              "{}: dataset '{}' has dtype {}, expected float16 or float32 "
              "(little-endian IEEE)",
              path_, name, hdf5::DescribeType(type.get()));
        }
        if (storage && *storage != *found) {
          ThrowInputError(
              "{}: dataset '{}' has dtype {}, expected {} like '{}' (one storage "
              "dtype per trace)",
              path_, name, StorageTypeName(*found), StorageTypeName(*storage), storage_from);
        }
        storage = found;
        storage_from = name;
        CheckDims(ds.get(), name, expected, dim_names);
      }
    }
    meta_.storage = *storage;
  }

  void CheckGateFlags() {
    const std::string name = "/gate_flags";
    if (!hdf5::Exists(file_.get(), name)) return;
    Handle ds = OpenDataset(name, "uint8 [layers, kv_heads, total_len]");
    Handle type(H5Dget_type(ds.get()));
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1 ||
        H5Tget_sign(type.get()) != H5T_SGN_NONE) {
      ThrowInputError("{}: dataset '{}' has dtype {}, expected uint8 (1 = keep, 0 = evict)", path_,
                      name, hdf5::DescribeType(type.get()));
    }
    CheckDims(ds.get(), name,
              {static_cast<hsize_t>(meta_.shape.layers), static_cast<hsize_t>(meta_.shape.kv_heads),
               static_cast<hsize_t>(meta_.total_len)},
              "layers, kv_heads, total_len");
    std::vector<uint8_t> flags(static_cast<size_t>(meta_.shape.layers) *
                               static_cast<size_t>(meta_.shape.kv_heads) *
                               static_cast<size_t>(meta_.total_len));
    if (H5Dread(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, flags.data()) < 0) {
      ThrowInputError("{}: cannot read dataset '{}' (corrupt?)", path_, name);
    }
    for (size_t i = 0; i < flags.size(); ++i) {
      if (flags[i] > 1) {
        ThrowInputError("{}: dataset '{}' holds {} at flat index {}, expected 0 or 1", path_, name,
                        flags[i], i);
      }
    }
    has_gate_flags_ = true;
  }

  // Streams every tensor one head at a time and rejects NaN and infinities.
  void CheckFinite() const {
    const int64_t t = meta_.total_len;
    const int d = meta_.shape.head_dim;
    std::vector<float> head(static_cast<size_t>(t) * static_cast<size_t>(d));
    for (int l = 0; l < meta_.shape.layers; ++l) {
      for (int i = 0; i < 5; ++i) {
        if (kTensors[i].pre_rope && !meta_.has_pre_rope) continue;
        const int heads = kTensors[i].query ? meta_.shape.q_heads : meta_.shape.kv_heads;
        const std::string name = LayerPath(l, kTensors[i].name);
        for (int h = 0; h < heads; ++h) {
          ReadHeads(name, h, 1, head.data());
          const auto bad =
              std::find_if(head.begin(), head.end(), [](float x) { return !std::isfinite(x); });
          if (bad != head.end()) {
            const int64_t flat = bad - head.begin();
            ThrowInputError("{}: dataset '{}' holds {} at [{}, {}, {}], expected finite values",
                            path_, name, *bad, h, flat / d, flat % d);
          }
        }
      }
    }
  }

  // Reads heads [head_begin, head_begin + head_count) of a validated [heads, T, d] dataset into
  // `dst` as float32, row-major.
  void ReadHeads(const std::string& name, int head_begin, int head_count, float* dst) const {
    std::lock_guard lock(Hdf5Mutex());
    Handle ds(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT));
    const hsize_t t = static_cast<hsize_t>(meta_.total_len);
    const hsize_t d = static_cast<hsize_t>(meta_.shape.head_dim);
    const hsize_t start[3] = {static_cast<hsize_t>(head_begin), 0, 0};
    const hsize_t count[3] = {static_cast<hsize_t>(head_count), t, d};
    Handle file_space(H5Dget_space(ds.get()));
    Handle mem_space(H5Screate_simple(3, count, nullptr));
    bool ok = ds.valid() && H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr,
                                                count, nullptr) >= 0;
    const size_t n = static_cast<size_t>(head_count) * t * d;
    if (ok && meta_.storage == StorageType::kFloat32) {
      ok = H5Dread(ds.get(), H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(), H5P_DEFAULT,
                   dst) >= 0;
    } else if (ok) {
      std::vector<uint16_t> raw(n);
      ok = H5Dread(ds.get(), float16_.get(), mem_space.get(), file_space.get(), H5P_DEFAULT,
                   raw.data()) >= 0;
      if (ok) DecodeHalf(raw.data(), n, dst);
    }
    if (!ok) ThrowInputError("{}: cannot read dataset '{}' (corrupt or truncated?)", path_, name);
  }

  std::string path_;
  TraceMeta meta_;
  uint64_t file_bytes_ = 0;
  bool has_gate_flags_ = false;
  Handle file_;
  Handle float16_;
};

TraceReader::TraceReader(const std::string& path) : impl_(std::make_unique<Impl>(path)) {}
TraceReader::~TraceReader() = default;
TraceReader::TraceReader(TraceReader&&) noexcept = default;
TraceReader& TraceReader::operator=(TraceReader&&) noexcept = default;

const std::string& TraceReader::path() const { return impl_->path(); }
const TraceMeta& TraceReader::meta() const { return impl_->meta(); }
StorageType TraceReader::storage() const { return impl_->meta().storage; }
uint64_t TraceReader::file_bytes() const { return impl_->file_bytes(); }
LayerTensors TraceReader::ReadLayer(int layer) const { return impl_->ReadLayer(layer); }
KvHeadSlice TraceReader::ReadSlice(int layer, int kv_head) const {
  return impl_->ReadSlice(layer, kv_head);
}
bool TraceReader::has_gate_flags() const { return impl_->has_gate_flags(); }
std::vector<uint8_t> TraceReader::ReadGateFlags(int layer, int kv_head) const {
  return impl_->ReadGateFlags(layer, kv_head);
}

Trace TraceReader::ReadAll() const {
  std::vector<LayerTensors> layers;
  layers.reserve(static_cast<size_t>(meta().shape.layers));
  for (int l = 0; l < meta().shape.layers; ++l) layers.push_back(ReadLayer(l));
  Trace trace(meta(), std::move(layers));
  if (has_gate_flags()) {
    std::vector<uint8_t> flags;
    for (int l = 0; l < meta().shape.layers; ++l) {
      for (int h = 0; h < meta().shape.kv_heads; ++h) {
        const std::vector<uint8_t> head = ReadGateFlags(l, h);
        flags.insert(flags.end(), head.begin(), head.end());
      }
    }
    trace.set_gate_flags(std::move(flags));
  }
  return trace;
}

Trace ReadTrace(const std::string& path) { return TraceReader(path).ReadAll(); }

}  // namespace kvsim::traces
