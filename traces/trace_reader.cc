// TraceReader and ReadTrace (traces/trace_io.h): validation at open, then layer and slice reads.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>

#include "common/atomic_file.h"
#include "common/error.h"
#include "traces/float16.h"
#include "traces/hdf5_util.h"
#include "traces/string_table.h"
#include "traces/trace_io.h"
#include "traces/trace_io_internal.h"

namespace kvsim::traces {

using hdf5::Handle;
using hdf5::Hdf5Mutex;
using internal::kTensors;
using internal::LayerPath;
using internal::TensorOf;
using internal::TensorSpec;

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

  void ReadLayer(int layer, LayerTensors* out) const {
    CheckLayerIndex(layer);
    for (int t = 0; t < 5; ++t) {
      HeadTensor& tensor = TensorOf(*out, t);
      if (kTensors[t].pre_rope && !meta_.has_pre_rope) {
        tensor = HeadTensor();
        continue;
      }
      const int heads = kTensors[t].query ? meta_.shape.q_heads : meta_.shape.kv_heads;
      internal::EnsureShape(tensor, heads, meta_.total_len, meta_.shape.head_dim);
      ReadHeads(LayerPath(layer, kTensors[t].name), 0, heads, tensor.data());
    }
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
    if (!ok) ThrowReadError("/gate_flags");
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
    if (format != internal::kFormatName) {
      ThrowInputError("{}: attribute 'format' of '/' is \"{}\", expected \"{}\"", path_, format,
                      internal::kFormatName);
    }
    const int64_t version = IntAttribute("format_version", "an integer (1)");
    if (version != internal::kFormatVersion) {
      ThrowInputError("{}: attribute 'format_version' of '/' is {}, expected {}", path_, version,
                      internal::kFormatVersion);
    }
    // Absent in version 1.0 files. Minor versions only add: any one >= 0 reads, the string
    // layout being chosen by which datasets are present (FORMAT.md, "Strings").
    if (H5Aexists(file_.get(), "format_minor_version") > 0) {
      const int64_t minor = IntAttribute("format_minor_version", "an integer (1)");
      if (minor < 0) {
        ThrowInputError("{}: attribute 'format_minor_version' of '/' is {}, expected >= 0", path_,
                        minor);
      }
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

  // A declared shape is trusted only as far as the file backs it: reading allocates the whole
  // shape (in float32 for tensors), so a few-KiB file that declares 2^30 elements must fail
  // here, not in the allocator. Compression never shrinks attention data 64-fold (gzip on
  // float16 saves ~13%, FORMAT.md); fill values standing in for chunks never written do.
  void CheckStoredBytes(hid_t ds,
                        const std::string& name,
                        const std::vector<hsize_t>& dims,
                        size_t element_bytes) const {
    constexpr double kMaxCompression = 64.0;
    double declared = static_cast<double>(element_bytes);
    for (const hsize_t dim : dims) declared *= static_cast<double>(dim);
    const auto stored = static_cast<double>(H5Dget_storage_size(ds));
    if (stored * kMaxCompression < declared) {
      ThrowInputError(
          "{}: dataset '{}' declares shape {} ({:.0f} bytes) but the file holds {:.0f} bytes of "
          "it: declared size larger than the data in the file (truncated or corrupt?)",
          path_, name, hdf5::FormatDims(dims), declared, stored);
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
      CheckStoredBytes(ds.get(), name, {t}, sizeof(int32_t));
      meta_.token_ids.resize(t);
      if (H5Dread(ds.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                  meta_.token_ids.data()) < 0) {
        ThrowReadError(name);
      }
      for (size_t i = 0; i < meta_.token_ids.size(); ++i) {
        if (meta_.token_ids[i] < 0) {
          ThrowInputError("{}: dataset '{}' has token id {} at position {}, expected >= 0", path_,
                          name, meta_.token_ids[i], i);
        }
      }
    }
    meta_.token_text = ReadStrings("/tokens/text", t, "total_len");
  }

  // The optional string column `base` of `count` strings: format 1.1's byte + offset datasets
  // (string_table.h) if present, else a 1.0 string dataset, else none (an empty vector).
  std::vector<std::string> ReadStrings(const std::string& base,
                                       hsize_t count,
                                       const char* count_name) const {
    if (hdf5::Exists(file_.get(), internal::StringOffsetsPath(base))) {
      return internal::ReadStringTable(file_.get(), path_, base, count);
    }
    std::vector<std::string> values;
    if (!hdf5::Exists(file_.get(), base)) return values;
    Handle ds = OpenDataset(base, fmt::format("string [{}]", count_name));
    CheckDims(ds.get(), base, {count}, count_name);
    if (!hdf5::ReadStringDataset(ds.get(), &values)) {
      Handle type(H5Dget_type(ds.get()));
      ThrowInputError("{}: dataset '{}' has dtype {}, expected string (UTF-8)", path_, base,
                      hdf5::DescribeType(type.get()));
    }
    for (std::string& v : values) v = internal::EscapeInvalidUtf8(v);
    return values;
  }

  [[noreturn]] void ThrowReadError(const std::string& name) const {
    ThrowInputError(
        "{}: cannot read dataset '{}': HDF5 read failed (checksum mismatch or corrupt data)", path_,
        name);
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
    CheckStoredBytes(begin.get(), "/segments/begin", dims, sizeof(int64_t));
    auto read_ints = [&](const char* name, hid_t mem_type, void* out) {
      Handle ds = OpenDataset(name, "an integer [segments] dataset");
      CheckIntegerType(ds.get(), name, "an integer type");
      CheckDims(ds.get(), name, {n}, "segments, the length of '/segments/begin'");
      if (H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        ThrowReadError(name);
      }
    };
    std::vector<int64_t> b(n), e(n);
    std::vector<int32_t> turn(n);
    read_ints("/segments/begin", H5T_NATIVE_INT64, b.data());
    read_ints("/segments/end", H5T_NATIVE_INT64, e.data());
    read_ints("/segments/turn", H5T_NATIVE_INT32, turn.data());
    const std::vector<std::string> role =
        ReadStrings("/segments/role", n, "segments, the length of '/segments/begin'");
    if (role.size() != n) {
      ThrowInputError("{}: dataset '/segments/role' is missing, expected string [segments]", path_);
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
        CheckStoredBytes(ds.get(), name, expected, *found == StorageType::kFloat16 ? 2 : 4);
        CheckFilters(ds.get(), name);
      }
    }
    meta_.storage = *storage;
  }

  // Writers choose the filters (FORMAT.md); any this HDF5 build can decode is accepted. Naming
  // an unavailable one here beats a bare read failure later (e.g. a file compressed with a
  // third-party plugin such as Blosc or LZF).
  void CheckFilters(hid_t ds, const std::string& name) const {
    std::string filter;
    if (!hdf5::FiltersDecodable(ds, &filter)) {
      ThrowInputError(
          "{}: dataset '{}' uses HDF5 filter {}, which this HDF5 library cannot decode; "
          "expected a standard filter (deflate, shuffle, fletcher32, nbit, scaleoffset)",
          path_, name, filter);
    }
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
    CheckStoredBytes(ds.get(), name, hdf5::Dims(ds.get()), 1);
    std::vector<uint8_t> flags(static_cast<size_t>(meta_.shape.layers) *
                               static_cast<size_t>(meta_.shape.kv_heads) *
                               static_cast<size_t>(meta_.total_len));
    if (H5Dread(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, flags.data()) < 0) {
      ThrowReadError(name);
    }
    for (size_t i = 0; i < flags.size(); ++i) {
      if (flags[i] > 1) {
        ThrowInputError("{}: dataset '{}' holds {} at flat index {}, expected 0 or 1", path_, name,
                        flags[i], i);
      }
    }
    has_gate_flags_ = true;
  }

  // Streams every tensor one head at a time and rejects NaN and infinities. The check runs on
  // the stored bits (an all-ones exponent field), so float16 heads need no decoding.
  void CheckFinite() const {
    const size_t n =
        static_cast<size_t>(meta_.total_len) * static_cast<size_t>(meta_.shape.head_dim);
    const bool half = meta_.storage == StorageType::kFloat16;
    std::vector<uint16_t> halves(half ? n : 0);
    std::vector<uint32_t> floats(half ? 0 : n);  // float32 bits
    for (int l = 0; l < meta_.shape.layers; ++l) {
      for (int i = 0; i < 5; ++i) {
        if (kTensors[i].pre_rope && !meta_.has_pre_rope) continue;
        const int heads = kTensors[i].query ? meta_.shape.q_heads : meta_.shape.kv_heads;
        const std::string name = LayerPath(l, kTensors[i].name);
        for (int h = 0; h < heads; ++h) {
          size_t bad = n;
          if (half) {
            ReadStored(name, h, 1, halves.data());
            bad = FirstNonFinite<uint16_t>(halves.data(), n, 0x7c00u);
          } else {
            ReadStored(name, h, 1, floats.data());
            bad = FirstNonFinite<uint32_t>(floats.data(), n, 0x7f800000u);
          }
          if (bad != n) {
            const float value =
                half ? float16::ToFloat(halves[bad]) : std::bit_cast<float>(floats[bad]);
            const size_t d = static_cast<size_t>(meta_.shape.head_dim);
            ThrowInputError("{}: dataset '{}' holds {} at [{}, {}, {}], expected finite values",
                            path_, name, value, h, bad / d, bad % d);
          }
        }
      }
    }
  }

  // Index of the first value whose exponent field (`exponent_mask`) is all ones (an infinity or
  // a NaN), or n. Branch-free over blocks so the compiler vectorizes the common all-finite case.
  template <typename Bits>
  static size_t FirstNonFinite(const Bits* bits, size_t n, Bits exponent_mask) {
    constexpr size_t kBlock = 256;
    for (size_t begin = 0; begin < n; begin += kBlock) {
      const size_t end = std::min(n, begin + kBlock);
      bool any = false;
      for (size_t i = begin; i < end; ++i) any |= (bits[i] & exponent_mask) == exponent_mask;
      if (!any) continue;
      for (size_t i = begin; i < end; ++i) {
        if ((bits[i] & exponent_mask) == exponent_mask) return i;
      }
    }
    return n;
  }

  // Reads heads [head_begin, head_begin + head_count) of a validated [heads, T, d] dataset into
  // `dst` as float32, row-major. float16 goes through a buffer of one head, not of all of them:
  // fresh memory costs a page fault per 4 KiB, which dominates a read from the page cache.
  void ReadHeads(const std::string& name, int head_begin, int head_count, float* dst) const {
    if (meta_.storage == StorageType::kFloat32) {
      ReadStored(name, head_begin, head_count, dst);
      return;
    }
    const size_t n =
        static_cast<size_t>(meta_.total_len) * static_cast<size_t>(meta_.shape.head_dim);
    std::vector<uint16_t> raw(n);
    for (int h = 0; h < head_count; ++h) {
      ReadStored(name, head_begin + h, 1, raw.data());
      float16::Decode(raw.data(), n, dst + static_cast<size_t>(h) * n);
    }
  }

  // Reads heads as stored: float16 bits into uint16_t, float32 into float.
  void ReadStored(const std::string& name, int head_begin, int head_count, void* dst) const {
    std::lock_guard lock(Hdf5Mutex());
    Handle ds(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT));
    const hsize_t t = static_cast<hsize_t>(meta_.total_len);
    const hsize_t d = static_cast<hsize_t>(meta_.shape.head_dim);
    const hsize_t start[3] = {static_cast<hsize_t>(head_begin), 0, 0};
    const hsize_t count[3] = {static_cast<hsize_t>(head_count), t, d};
    Handle file_space(H5Dget_space(ds.get()));
    Handle mem_space(H5Screate_simple(3, count, nullptr));
    const hid_t mem_type =
        meta_.storage == StorageType::kFloat32 ? H5T_NATIVE_FLOAT : float16_.get();
    const bool ok =
        ds.valid() &&
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) >=
            0 &&
        H5Dread(ds.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, dst) >= 0;
    if (!ok) ThrowReadError(name);
  }

  std::string path_;
  TraceMeta meta_;
  uint64_t file_bytes_ = 0;
  bool has_gate_flags_ = false;
  Handle file_;
  Handle float16_;
};

TraceReader::TraceReader(const std::string& path) : impl_(std::make_unique<Impl>(path)) {
  RegisterInputFile(path);
}
TraceReader::~TraceReader() = default;
TraceReader::TraceReader(TraceReader&&) noexcept = default;
TraceReader& TraceReader::operator=(TraceReader&&) noexcept = default;

const std::string& TraceReader::path() const { return impl_->path(); }
const TraceMeta& TraceReader::meta() const { return impl_->meta(); }
StorageType TraceReader::storage() const { return impl_->meta().storage; }
uint64_t TraceReader::file_bytes() const { return impl_->file_bytes(); }
LayerTensors TraceReader::ReadLayer(int layer) const {
  LayerTensors out;
  impl_->ReadLayer(layer, &out);
  return out;
}
void TraceReader::ReadLayer(int layer, LayerTensors* out) const { impl_->ReadLayer(layer, out); }
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
