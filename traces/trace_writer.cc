// TraceWriter, WriteTrace and WriteTraceByLayer (traces/trace_io.h).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <future>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/version.h"
#include "traces/float16.h"
#include "traces/hdf5_util.h"
#include "traces/string_table.h"
#include "traces/trace_io.h"
#include "traces/trace_io_internal.h"

namespace kvsim::traces {

using hdf5::Handle;
using hdf5::Hdf5Mutex;
using internal::ElementBytes;
using internal::kTensors;
using internal::LayerPath;
using internal::TensorOf;

namespace {

// Encodes n floats into the storage type at `dst` (2 or 4 bytes per value).
void Encode(const float* src, size_t n, StorageType storage, uint16_t* dst) {
  if (storage == StorageType::kFloat32) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    float16::Encode(src, n, dst);
  }
}

}  // namespace

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
    const Handle access = hdf5::ChecksummedMetadataAccess();
    file_ =
        Handle(H5Fcreate(atomic_.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()));
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
    KVSIM_ASSERT(layers_written_.empty(), "{}: TraceWriter::Append after WriteLayer", path_);
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
      CheckShape(sink, TensorOf(layers[static_cast<size_t>(sink.layer)], sink.tensor), n);
    }
    meta_.token_ids.insert(meta_.token_ids.end(), token_ids.begin(), token_ids.end());
    if (with_text) {
      meta_.token_text.insert(meta_.token_text.end(), token_text.begin(), token_text.end());
    }
    std::lock_guard lock(Hdf5Mutex());
    const size_t d = static_cast<size_t>(meta_.shape.head_dim);
    const size_t units = ElementBytes(options_.storage) / 2;  // uint16_t units per value
    const int64_t chunk = options_.chunk_positions;
    for (Sink& sink : sinks_) {
      sink.pending.resize(static_cast<size_t>(sink.heads) * static_cast<size_t>(chunk) * d * units);
    }
    int64_t offset = 0;
    while (offset < n) {
      const int64_t take = std::min(n - offset, chunk - buffered_);
      for (Sink& sink : sinks_) {
        const HeadTensor& t = TensorOf(layers[static_cast<size_t>(sink.layer)], sink.tensor);
        for (int h = 0; h < sink.heads; ++h) {
          uint16_t* dst =
              sink.pending.data() + static_cast<size_t>(h * chunk + buffered_) * d * units;
          Encode(t.Row(h, offset), static_cast<size_t>(take) * d, options_.storage, dst);
        }
      }
      buffered_ += take;
      offset += take;
      if (buffered_ == chunk) Flush();
    }
  }

  // Writes all `total` positions of one layer (WriteTrace, WriteTraceByLayer). Each layer once,
  // every one before Commit(); not mixable with Append().
  void WriteLayer(int layer, const LayerTensors& tensors, int64_t total) {
    KVSIM_ASSERT(file_.valid(), "{}: TraceWriter::WriteLayer after Commit", path_);
    KVSIM_ASSERT(positions_written() == 0 || !layers_written_.empty(),
                 "{}: WriteLayer after Append", path_);
    KVSIM_ASSERT(layer >= 0 && layer < meta_.shape.layers, "layer {} out of range", layer);
    if (layers_written_.empty()) layers_written_.assign(static_cast<size_t>(meta_.shape.layers), 0);
    KVSIM_ASSERT(!layers_written_[static_cast<size_t>(layer)], "{}: layer {} written twice", path_,
                 layer);
    for (const Sink& sink : sinks_) {
      if (sink.layer == layer) CheckShape(sink, TensorOf(tensors, sink.tensor), total);
    }
    std::lock_guard lock(Hdf5Mutex());
    const hsize_t d = static_cast<hsize_t>(meta_.shape.head_dim);
    const hsize_t t = static_cast<hsize_t>(total);
    // float16 is encoded one head at a time (the buffer holds T x d values); float32 is written
    // straight from the tensor.
    const bool half = options_.storage == StorageType::kFloat16;
    std::vector<uint16_t> encoded(half ? static_cast<size_t>(t * d) : 0);
    for (Sink& sink : sinks_) {
      if (sink.layer != layer) continue;
      const HeadTensor& tensor = TensorOf(tensors, sink.tensor);
      const hsize_t new_dims[3] = {static_cast<hsize_t>(sink.heads), t, d};
      const hsize_t count[3] = {1, t, d};
      bool ok = H5Dset_extent(sink.dataset.get(), new_dims) >= 0;
      Handle file_space(H5Dget_space(sink.dataset.get()));
      Handle mem_space(H5Screate_simple(3, count, nullptr));
      for (int h = 0; ok && h < sink.heads; ++h) {
        const void* data = tensor.Row(h, 0);
        if (half) {
          float16::Encode(tensor.Row(h, 0), static_cast<size_t>(t * d), encoded.data());
          data = encoded.data();
        }
        const hsize_t start[3] = {static_cast<hsize_t>(h), 0, 0};
        ok = H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count,
                                 nullptr) >= 0 &&
             H5Dwrite(sink.dataset.get(), file_type_.get(), mem_space.get(), file_space.get(),
                      H5P_DEFAULT, data) >= 0;
      }
      if (!ok) {
        ThrowInputError("{}: HDF5 failed writing dataset '{}' (disk full?)", path_, sink.name);
      }
    }
    layers_written_[static_cast<size_t>(layer)] = 1;
    written_ = total;
  }

  void SetTokens(std::vector<int32_t> token_ids, std::vector<std::string> token_text) {
    meta_.token_ids = std::move(token_ids);
    meta_.token_text = std::move(token_text);
  }
  void SetPromptLength(int64_t prompt_len) { meta_.prompt_len = prompt_len; }
  void SetSegments(std::vector<Segment> segments) { meta_.segments = std::move(segments); }
  int64_t positions_written() const { return written_ + buffered_; }

  void Commit() {
    KVSIM_ASSERT(file_.valid(), "{}: TraceWriter::Commit called twice", path_);
    const int64_t total = positions_written();
    meta_.total_len = total;
    const auto missing = std::find(layers_written_.begin(), layers_written_.end(), 0);
    KVSIM_ASSERT(missing == layers_written_.end(), "{}: layer {} never written", path_,
                 missing - layers_written_.begin());
    KVSIM_ASSERT(static_cast<int64_t>(meta_.token_ids.size()) == total,
                 "{}: {} token ids for {} positions", path_, meta_.token_ids.size(), total);
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
  // chunk is written (and compressed, if asked) exactly once: appending one position at a time
  // would otherwise rewrite a chunk per position or thrash HDF5's 1 MiB chunk cache.
  struct Sink {
    int layer = 0;
    int tensor = 0;  // index into kTensors
    int heads = 0;
    std::string name;
    Handle dataset;
    // [heads, chunk_positions, d] values in file encoding (one or two uint16_t units each);
    // the first buffered_ rows of each head are valid. Allocated on the first Append.
    std::vector<uint16_t> pending;
  };

  void CheckShape(const Sink& sink, const HeadTensor& t, int64_t positions) const {
    if (t.heads() != sink.heads || t.positions() != positions || t.dim() != meta_.shape.head_dim) {
      ThrowInputError("{}: got '{}' of shape [{}, {}, {}], expected [{}, {}, {}]", path_, sink.name,
                      t.heads(), t.positions(), t.dim(), sink.heads, positions,
                      meta_.shape.head_dim);
    }
  }

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
      // Shuffle first: it byte-transposes each chunk so exponent bytes sit together, which is
      // where deflate finds its savings on float data.
      H5Pset_shuffle(plist.get());
      H5Pset_deflate(plist.get(), static_cast<unsigned>(options_.compression_level));
    }
    // Last in the pipeline, so it checks the bytes as stored: a flipped bit in a chunk becomes a
    // read error instead of a wrong number. It costs one add per 2 bytes (FORMAT.md).
    H5Pset_fletcher32(plist.get());
    sink.dataset = Handle(H5Dcreate2(file_.get(), sink.name.c_str(), file_type_.get(), space.get(),
                                     H5P_DEFAULT, plist.get(), H5P_DEFAULT));
    if (!sink.dataset.valid()) ThrowInputError("{}: cannot create dataset '{}'", path_, sink.name);
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
    return hdf5::WriteChecksummed1D(group.get(), "ids", H5T_STD_I32LE, H5T_NATIVE_INT32,
                                    meta_.token_ids.size(), meta_.token_ids.data()) &&
           (meta_.token_text.empty() ||
            internal::WriteStringTable(group.get(), "text", meta_.token_text));
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
    const size_t n = meta_.segments.size();
    const hid_t g = group.get();
    return hdf5::WriteChecksummed1D(g, "begin", H5T_STD_I64LE, H5T_NATIVE_INT64, n, begin.data()) &&
           hdf5::WriteChecksummed1D(g, "end", H5T_STD_I64LE, H5T_NATIVE_INT64, n, end.data()) &&
           hdf5::WriteChecksummed1D(g, "turn", H5T_STD_I32LE, H5T_NATIVE_INT32, n, turn.data()) &&
           internal::WriteStringTable(g, "role", role);
  }

  bool WriteRootAttributes() {
    const hid_t root = file_.get();
    const models::ModelShape& s = meta_.shape;
    return hdf5::WriteStringAttribute(root, "format", internal::kFormatName) &&
           hdf5::WriteInt64Attribute(root, "format_version", internal::kFormatVersion) &&
           hdf5::WriteInt64Attribute(root, "format_minor_version", internal::kFormatMinorVersion) &&
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
  // Layer-at-a-time writing (WriteTraceByLayer): 1 per layer written; empty in Append mode.
  std::vector<char> layers_written_;
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

namespace {

// WriteTrace and WriteTraceByLayer take every position at once: the meta must list them all.
void CheckTokenCounts(const std::string& path, const TraceMeta& meta) {
  const int64_t total = meta.total_len;
  if (static_cast<int64_t>(meta.token_ids.size()) != total ||
      (!meta.token_text.empty() && static_cast<int64_t>(meta.token_text.size()) != total)) {
    ThrowInputError(
        "{}: {} token ids and {} token texts for total_len = {}, expected {} ids and {} texts or "
        "none",
        path, meta.token_ids.size(), meta.token_text.size(), total, total, total);
  }
}

}  // namespace

void WriteTrace(const std::string& path, const Trace& trace, TraceWriterOptions options) {
  // Layer by layer from the trace's own buffers: Append would need the layers copied into one
  // contiguous span first, then buffers them again chunk by chunk.
  const TraceMeta& meta = trace.meta();
  CheckTokenCounts(path, meta);
  options.with_pre_rope = meta.has_pre_rope;
  TraceWriter writer(path, meta, options);
  TraceWriter::Impl& impl = *writer.impl_;
  impl.SetTokens(meta.token_ids, meta.token_text);
  impl.SetPromptLength(meta.prompt_len);
  impl.SetSegments(meta.segments);
  for (int l = 0; l < meta.shape.layers; ++l) impl.WriteLayer(l, trace.layer(l), meta.total_len);
  writer.Commit();
}

void WriteTraceByLayer(const std::string& path,
                       const TraceMeta& meta,
                       const std::function<void(int layer, LayerTensors& out)>& produce,
                       TraceWriterOptions options) {
  CheckTokenCounts(path, meta);
  options.with_pre_rope = meta.has_pre_rope;
  TraceWriter writer(path, meta, options);
  TraceWriter::Impl& impl = *writer.impl_;
  impl.SetTokens(meta.token_ids, meta.token_text);
  impl.SetPromptLength(meta.prompt_len);
  impl.SetSegments(meta.segments);
  // Layer l + 1 is produced on another thread while layer l is encoded and written, so a
  // producer that computes and a disk that writes both stay busy. `next` is declared after the
  // buffers so that, on an exception, it waits for the producer before they go.
  const int layers = meta.shape.layers;
  LayerTensors buffers[2];
  std::future<void> next = std::async(std::launch::async, [&] { produce(0, buffers[0]); });
  for (int l = 0; l < layers; ++l) {
    next.get();
    if (l + 1 < layers) {
      next = std::async(std::launch::async, [&, l] { produce(l + 1, buffers[(l + 1) % 2]); });
    }
    impl.WriteLayer(l, buffers[l % 2], meta.total_len);
  }
  writer.Commit();
}

}  // namespace kvsim::traces
