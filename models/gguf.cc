#include "models/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::models {
namespace {

constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT
constexpr int64_t kQ8_0Block = 32;          // QK8_0
constexpr int64_t kQ8_0BlockBytes = 34;     // fp16 scale + 32 int8

// gguf_type of metadata values.
enum MetaType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// Sequential little-endian reads of the header; every read names what it was reading when the
// file ends early.
class HeaderReader {
 public:
  explicit HeaderReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) ThrowInputError("{}: cannot open GGUF file", path);
    in_.seekg(0, std::ios::end);
    file_bytes_ = static_cast<uint64_t>(in_.tellg());
    in_.seekg(0);
  }

  template <typename T>
  T Read(const std::string& what) {
    T value;
    in_.read(reinterpret_cast<char*>(&value), sizeof(T));
    if (!in_) ThrowInputError("{}: truncated GGUF file while reading {}", path_, what);
    pos_ += sizeof(T);
    return value;
  }

  std::string ReadString(const std::string& what) {
    const uint64_t len = Read<uint64_t>(what + " (string length)");
    if (len > (uint64_t{1} << 30)) {
      ThrowInputError("{}: {} has string length {}, expected < 1 GiB (corrupt file?)", path_, what,
                      len);
    }
    // A declared length is allocated only if the file still holds that many bytes (fuzzing,
    // issue 15: a 1 GiB length in a 4 KiB file cost a 1 GiB memset before "truncated").
    if (len > remaining()) {
      ThrowInputError(
          "{}: {} has string length {} but only {} bytes remain in the file (truncated or "
          "corrupt?)",
          path_, what, len, remaining());
    }
    std::string s(len, '\0');
    in_.read(s.data(), static_cast<std::streamsize>(len));
    if (!in_) ThrowInputError("{}: truncated GGUF file while reading {}", path_, what);
    pos_ += len;
    return s;
  }

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return file_bytes_ > pos_ ? file_bytes_ - pos_ : 0; }

 private:
  std::string path_;
  std::ifstream in_;
  uint64_t pos_ = 0;
  uint64_t file_bytes_ = 0;
};

int64_t ReadInteger(HeaderReader& r, uint32_t type, const std::string& what) {
  switch (type) {
    case kUint8:
      return r.Read<uint8_t>(what);
    case kInt8:
      return r.Read<int8_t>(what);
    case kUint16:
      return r.Read<uint16_t>(what);
    case kInt16:
      return r.Read<int16_t>(what);
    case kUint32:
      return r.Read<uint32_t>(what);
    case kInt32:
      return r.Read<int32_t>(what);
    case kInt64:
      return r.Read<int64_t>(what);
    default: {  // kUint64
      const uint64_t v = r.Read<uint64_t>(what);
      // Unset ids (e.g. tokenizer.ggml.padding_token_id) are often UINT32_MAX/UINT64_MAX; keep
      // them representable as -1 rather than failing the whole file.
      return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                 ? -1
                 : static_cast<int64_t>(v);
    }
  }
}

bool IsIntegerType(uint32_t t) {
  return t == kUint8 || t == kInt8 || t == kUint16 || t == kInt16 || t == kUint32 || t == kInt32 ||
         t == kUint64 || t == kInt64;
}

GgufValue ReadValue(HeaderReader& r,
                    uint32_t type,
                    const std::string& path,
                    const std::string& key) {
  const std::string what = "metadata value of '" + key + "'";
  if (IsIntegerType(type)) return ReadInteger(r, type, what);
  switch (type) {
    case kFloat32:
      return static_cast<double>(r.Read<float>(what));
    case kFloat64:
      return r.Read<double>(what);
    case kBool:
      return r.Read<uint8_t>(what) != 0;
    case kString:
      return r.ReadString(what);
    case kArray: {
      const uint32_t elem = r.Read<uint32_t>(what + " (array type)");
      const uint64_t n = r.Read<uint64_t>(what + " (array length)");
      if (n > (uint64_t{1} << 32)) {
        ThrowInputError("{}: metadata array '{}' has {} elements (corrupt file?)", path, key, n);
      }
      // Each element takes at least this many bytes of the file (a string: its 8-byte length),
      // so `n` is checked against what remains before reserving memory for it.
      const uint64_t min_bytes = elem == kUint8 || elem == kInt8 || elem == kBool        ? 1
                                 : elem == kUint16 || elem == kInt16                     ? 2
                                 : elem == kUint32 || elem == kInt32 || elem == kFloat32 ? 4
                                                                                         : 8;
      if (n > r.remaining() / min_bytes) {
        ThrowInputError(
            "{}: metadata array '{}' declares {} elements but only {} bytes remain in the file "
            "(truncated or corrupt?)",
            path, key, n, r.remaining());
      }
      if (IsIntegerType(elem) || elem == kBool) {
        std::vector<int64_t> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          v.push_back(elem == kBool ? r.Read<uint8_t>(what) : ReadInteger(r, elem, what));
        }
        return v;
      }
      if (elem == kFloat32 || elem == kFloat64) {
        std::vector<double> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          v.push_back(elem == kFloat32 ? static_cast<double>(r.Read<float>(what))
                                       : r.Read<double>(what));
        }
        return v;
      }
      if (elem == kString) {
        std::vector<std::string> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) v.push_back(r.ReadString(what));
        return v;
      }
      ThrowInputError("{}: metadata array '{}' has element type {}, expected a number or string",
                      path, key, elem);
    }
    default:
      ThrowInputError("{}: metadata key '{}' has value type {}, expected 0..12", path, key, type);
  }
}

// Bytes of `n` elements of a supported type, or -1 for a type we cannot read.
int64_t TensorBytes(uint32_t type, int64_t n) {
  switch (static_cast<GgufType>(type)) {
    case GgufType::kF32:
      return 4 * n;
    case GgufType::kF16:
    case GgufType::kBF16:
      return 2 * n;
    case GgufType::kQ8_0:
      return n / kQ8_0Block * kQ8_0BlockBytes;
  }
  return -1;
}

template <typename T>
const T& GetAs(const std::map<std::string, GgufValue>& metadata,
               const std::string& path,
               const std::string& key,
               const char* expected) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) ThrowInputError("{}: GGUF metadata key '{}' is missing", path, key);
  const T* value = std::get_if<T>(&it->second);
  if (value == nullptr) {
    ThrowInputError("{}: GGUF metadata key '{}' has another type, expected {}", path, key,
                    expected);
  }
  return *value;
}

}  // namespace

std::string GgufTypeName(uint32_t type) {
  static const char* const kNames[] = {
      "f32",     "f16",    "q4_0",    "q4_1",  "type 4", "type 5", "q5_0",  "q5_1",
      "q8_0",    "q8_1",   "q2_K",    "q3_K",  "q4_K",   "q5_K",   "q6_K",  "q8_K",
      "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s",  "iq2_s", "iq4_xs",
      "i8",      "i16",    "i32",     "i64",   "f64",    "iq1_m",  "bf16"};
  if (type < std::size(kNames)) return kNames[type];
  return "type " + std::to_string(type);
}

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (const int64_t d : dims) n *= d;
  return n;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: shift the mantissa up until its leading 1 is the implicit bit.
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

void DequantizeQ8_0(const uint8_t* blocks, int64_t n, float* out) {
  KVSIM_ASSERT(n % kQ8_0Block == 0, "Q8_0 length {} not a multiple of 32", n);
  for (int64_t b = 0; b < n / kQ8_0Block; ++b) {
    const uint8_t* block = blocks + b * kQ8_0BlockBytes;
    uint16_t d_bits;
    std::memcpy(&d_bits, block, 2);
    const float d = HalfToFloat(d_bits);
    const auto* q = reinterpret_cast<const int8_t*>(block + 2);
    for (int64_t i = 0; i < kQ8_0Block; ++i) out[b * kQ8_0Block + i] = d * static_cast<float>(q[i]);
  }
}

GgufFile::GgufFile(const std::string& path) : path_(path) {
  RegisterInputFile(path);
  HeaderReader r(path);
  const uint32_t magic = r.Read<uint32_t>("the magic");
  if (magic != 0x46554747u) {  // "GGUF" little-endian
    ThrowInputError("{}: bad magic 0x{:08X}, expected 'GGUF' (0x46554747): not a GGUF file", path,
                    magic);
  }
  version_ = r.Read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    ThrowInputError("{}: GGUF version {} is unsupported, expected 2 or 3", path, version_);
  }
  const uint64_t n_tensors = r.Read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.Read<uint64_t>("the metadata count");
  if (n_tensors > 1'000'000 || n_kv > 1'000'000) {
    ThrowInputError("{}: GGUF header claims {} tensors and {} metadata keys (corrupt file?)", path,
                    n_tensors, n_kv);
  }
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.ReadString("metadata key #" + std::to_string(i));
    const uint32_t type = r.Read<uint32_t>("the value type of '" + key + "'");
    GgufValue value = ReadValue(r, type, path, key);
    metadata_.insert_or_assign(std::move(key), std::move(value));
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo info;
    info.name = r.ReadString("tensor name #" + std::to_string(i));
    const std::string what = "tensor '" + info.name + "'";
    const uint32_t n_dims = r.Read<uint32_t>(what + " dimension count");
    if (n_dims > 4) ThrowInputError("{}: {} has {} dimensions, expected <= 4", path, what, n_dims);
    // Bounded so that elements() and every byte count derived from it stay far from int64
    // overflow (fuzzing, issue 15: extents of 2^35 x 2^32 overflowed the element count).
    constexpr uint64_t kMaxElements = uint64_t{1} << 40;
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t extent = r.Read<uint64_t>(what + " dimensions");
      if (extent > kMaxElements || (extent != 0 && elements > kMaxElements / extent)) {
        ThrowInputError(
            "{}: {} has extent {} after {} elements, expected at most 2^40 elements "
            "in all (corrupt file?)",
            path, what, extent, elements);
      }
      elements *= extent;
      info.dims.push_back(static_cast<int64_t>(extent));
    }
    info.type = r.Read<uint32_t>(what + " type");
    info.offset = r.Read<uint64_t>(what + " offset");
    tensors_.push_back(std::move(info));
  }
  uint64_t alignment = kDefaultAlignment;
  if (Has("general.alignment")) {
    const int64_t a = GetInt("general.alignment");
    if (a <= 0 || (a & (a - 1)) != 0) {
      ThrowInputError("{}: general.alignment is {}, expected a power of two", path, a);
    }
    alignment = static_cast<uint64_t>(a);
  }
  data_offset_ = (r.pos() + alignment - 1) / alignment * alignment;
  const uint64_t file_bytes = std::filesystem::file_size(path);
  for (const GgufTensorInfo& t : tensors_) {
    const int64_t bytes = TensorBytes(t.type, t.elements());
    // Written so that no sum wraps: an offset near 2^64 must not pass as small.
    if (bytes >= 0 && (data_offset_ > file_bytes || t.offset > file_bytes - data_offset_ ||
                       static_cast<uint64_t>(bytes) > file_bytes - data_offset_ - t.offset)) {
      ThrowInputError(
          "{}: tensor '{}' ({} bytes at offset {}) ends past the end of the file ({} "
          "bytes): truncated file",
          path, t.name, bytes, data_offset_ + t.offset, file_bytes);
    }
  }
  CheckTensorLayout(file_bytes, alignment);
}

// GGUF writers lay the tensors out back to back, each padded to the alignment. A tensor whose
// shape and type do not fill the space up to the next tensor (or overrun it) has a wrong type
// or shape label: reading it would reinterpret the bytes silently.
void GgufFile::CheckTensorLayout(uint64_t file_bytes, uint64_t alignment) const {
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 0; i < by_offset.size(); ++i) {
    const GgufTensorInfo& t = *by_offset[i];
    if (TensorBytes(t.type, t.elements()) < 0) continue;  // a type ReadMatrix names and refuses
    const auto bytes = static_cast<uint64_t>(TensorBytes(t.type, t.elements()));
    const uint64_t space = i + 1 < by_offset.size() ? by_offset[i + 1]->offset - t.offset
                                                    : file_bytes - data_offset_ - t.offset;
    if (bytes > space || space - bytes >= alignment) {
      ThrowInputError(
          "{}: tensor '{}' is labelled {} {} ({} bytes) but its data spans {} bytes (alignment "
          "{}): a wrong type or shape label (corrupt file?)",
          path_, t.name, GgufTypeName(t.type), fmt::join(t.dims, "x"), bytes, space, alignment);
    }
  }
}

int64_t GgufFile::GetInt(const std::string& key) const {
  return GetAs<int64_t>(metadata_, path_, key, "an integer");
}

double GgufFile::GetFloat(const std::string& key) const {
  const auto it = metadata_.find(key);
  if (it != metadata_.end()) {
    if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  }
  return GetAs<double>(metadata_, path_, key, "a number");
}

const std::string& GgufFile::GetString(const std::string& key) const {
  return GetAs<std::string>(metadata_, path_, key, "a string");
}

const std::vector<std::string>& GgufFile::GetStringArray(const std::string& key) const {
  return GetAs<std::vector<std::string>>(metadata_, path_, key, "an array of strings");
}

std::vector<double> GgufFile::GetFloatArray(const std::string& key) const {
  const auto it = metadata_.find(key);
  if (it != metadata_.end()) {
    if (const auto* ints = std::get_if<std::vector<int64_t>>(&it->second)) {
      return std::vector<double>(ints->begin(), ints->end());
    }
  }
  return GetAs<std::vector<double>>(metadata_, path_, key, "an array of numbers");
}

const std::vector<int64_t>& GgufFile::GetIntArray(const std::string& key) const {
  return GetAs<std::vector<int64_t>>(metadata_, path_, key, "an array of integers");
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

RowMatrixXf GgufFile::ReadMatrix(const GgufTensorInfo& info) const {
  if (info.dims.empty() || info.dims.size() > 2) {
    ThrowInputError("{}: tensor '{}' has {} dimensions, expected 1 or 2", path_, info.name,
                    info.dims.size());
  }
  const int64_t n = info.elements();
  const int64_t bytes = TensorBytes(info.type, n);
  if (bytes < 0) {
    ThrowInputError("{}: tensor '{}' has type {} ({}), expected one of f32, f16, bf16, q8_0", path_,
                    info.name, GgufTypeName(info.type), info.type);
  }
  if (info.type == static_cast<uint32_t>(GgufType::kQ8_0) && info.dims[0] % kQ8_0Block != 0) {
    ThrowInputError("{}: q8_0 tensor '{}' has row length {}, expected a multiple of 32", path_,
                    info.name, info.dims[0]);
  }
  std::vector<uint8_t> raw(static_cast<size_t>(bytes));
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(data_offset_ + info.offset));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(bytes));
  if (!in) ThrowInputError("{}: cannot read the data of tensor '{}'", path_, info.name);

  const Eigen::Index cols = info.dims[0];
  const Eigen::Index rows = info.dims.size() == 2 ? info.dims[1] : 1;
  RowMatrixXf m(rows, cols);
  float* out = m.data();
  switch (static_cast<GgufType>(info.type)) {
    case GgufType::kF32:
      std::memcpy(out, raw.data(), raw.size());
      break;
    case GgufType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      break;
    case GgufType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        out[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
      }
      break;
    case GgufType::kQ8_0:
      DequantizeQ8_0(raw.data(), n, out);
      break;
  }
  // A NaN or infinite weight would only surface as a trace kvsim's own reader rejects.
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) {
      ThrowInputError(
          "{}: tensor '{}' holds a non-finite value ({}) at element {}: corrupt "
          "weights",
          path_, info.name, out[i], i);
    }
  }
  return m;
}

namespace {

RowMatrixXf RequireMatrix(const GgufFile& file,
                          const std::string& name,
                          int64_t rows,
                          int64_t cols) {
  const GgufTensorInfo* info = file.FindTensor(name);
  if (info == nullptr) ThrowInputError("{}: tensor '{}' is missing", file.path(), name);
  const bool is_vector = rows == 1;
  const bool shape_ok =
      is_vector ? (info->dims.size() == 1 && info->dims[0] == cols)
                : (info->dims.size() == 2 && info->dims[0] == cols && info->dims[1] == rows);
  if (!shape_ok) {
    std::string dims;
    for (const int64_t d : info->dims) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    ThrowInputError("{}: tensor '{}' has GGUF dims [{}], expected [{}{}]", file.path(), name, dims,
                    cols, is_vector ? "" : ", " + std::to_string(rows));
  }
  return file.ReadMatrix(*info);
}

Eigen::VectorXf RequireVector(const GgufFile& file, const std::string& name, int64_t size) {
  return RequireMatrix(file, name, 1, size).row(0).transpose();
}

int RequirePositiveInt(const GgufFile& file, const std::string& key) {
  const int64_t v = file.GetInt(key);
  if (v <= 0 || v > std::numeric_limits<int>::max()) {
    ThrowInputError("{}: GGUF metadata '{}' is {}, expected a positive int", file.path(), key, v);
  }
  return static_cast<int>(v);
}

// SentencePiece writes a word-initial space as U+2581 (LOWER ONE EIGHTH BLOCK).
std::string SpaceFromSentencePiece(const std::string& piece) {
  static const std::string kMarker = "\xE2\x96\x81";
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kMarker.size(), kMarker) == 0) {
      out += ' ';
      i += kMarker.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

void LoadTokenizer(const GgufFile& file, GgufModel& model) {
  const std::string kModelKey = "tokenizer.ggml.model";
  if (!file.Has(kModelKey)) {
    model.tokenizer_problem = file.path() + ": GGUF has no vocabulary (" + kModelKey + " missing)";
    return;
  }
  const std::string& kind = file.GetString(kModelKey);
  if (kind != "llama") {
    model.tokenizer_problem = fmt::format(
        "{}: {} is '{}', expected 'llama' (SentencePiece); use token ids instead of text",
        file.path(), kModelKey, kind);
    return;
  }
  const auto& raw_pieces = file.GetStringArray("tokenizer.ggml.tokens");
  const size_t n = raw_pieces.size();
  std::vector<std::string> pieces;
  pieces.reserve(n);
  for (const std::string& p : raw_pieces) pieces.push_back(SpaceFromSentencePiece(p));
  std::vector<float> scores(n, 0.0f);
  if (file.Has("tokenizer.ggml.scores")) {
    const std::vector<double> s = file.GetFloatArray("tokenizer.ggml.scores");
    if (s.size() != n) {
      ThrowInputError("{}: tokenizer.ggml.scores has {} entries, expected {} (one per token)",
                      file.path(), s.size(), n);
    }
    for (size_t i = 0; i < n; ++i) scores[i] = static_cast<float>(s[i]);
  }
  std::vector<TokenType> types(n, TokenType::kNormal);
  if (file.Has("tokenizer.ggml.token_type")) {
    const auto& t = file.GetIntArray("tokenizer.ggml.token_type");
    if (t.size() != n) {
      ThrowInputError("{}: tokenizer.ggml.token_type has {} entries, expected {} (one per token)",
                      file.path(), t.size(), n);
    }
    for (size_t i = 0; i < n; ++i) {
      if (t[i] < 1 || t[i] > 6) {
        ThrowInputError("{}: tokenizer.ggml.token_type[{}] is {}, expected 1..6", file.path(), i,
                        t[i]);
      }
      types[i] = static_cast<TokenType>(t[i]);
    }
  }
  const auto id_or = [&](const std::string& key, int64_t fallback) {
    return static_cast<int32_t>(file.Has(key) ? file.GetInt(key) : fallback);
  };
  model.tokenizer.emplace(file.path(), std::move(pieces), std::move(scores), std::move(types),
                          id_or("tokenizer.ggml.bos_token_id", 1),
                          id_or("tokenizer.ggml.eos_token_id", 2));
}

}  // namespace

GgufModel LoadGgufLlama(const std::string& path) {
  const GgufFile file(path);
  const std::string& arch = file.GetString("general.architecture");
  if (arch != "llama") {
    ThrowInputError(
        "{}: general.architecture is '{}', expected 'llama' (the only architecture "
        "kvsim's reference transformer implements)",
        path, arch);
  }
  if (file.Has("llama.expert_count") && file.GetInt("llama.expert_count") > 0) {
    ThrowInputError("{}: llama.expert_count is {}: mixture-of-experts models are unsupported", path,
                    file.GetInt("llama.expert_count"));
  }
  if (file.Has("llama.rope.scaling.type") && file.GetString("llama.rope.scaling.type") != "none") {
    ThrowInputError(
        "{}: llama.rope.scaling.type is '{}', expected 'none' (RoPE scaling is "
        "unsupported)",
        path, file.GetString("llama.rope.scaling.type"));
  }

  GgufModel model;
  LlamaConfig& c = model.weights.config;
  c.dim = RequirePositiveInt(file, "llama.embedding_length");
  c.hidden_dim = RequirePositiveInt(file, "llama.feed_forward_length");
  c.layers = RequirePositiveInt(file, "llama.block_count");
  c.q_heads = RequirePositiveInt(file, "llama.attention.head_count");
  c.kv_heads = file.Has("llama.attention.head_count_kv")
                   ? RequirePositiveInt(file, "llama.attention.head_count_kv")
                   : c.q_heads;
  c.context_length = RequirePositiveInt(file, "llama.context_length");
  if (file.Has("llama.rope.freq_base")) {
    c.rope_theta = static_cast<float>(file.GetFloat("llama.rope.freq_base"));
  }
  if (file.Has("llama.attention.layer_norm_rms_epsilon")) {
    c.rms_eps = static_cast<float>(file.GetFloat("llama.attention.layer_norm_rms_epsilon"));
  }
  if (file.Has("llama.attention.key_length") &&
      file.GetInt("llama.attention.key_length") != c.dim / c.q_heads) {
    ThrowInputError(
        "{}: llama.attention.key_length is {}, expected embedding_length/head_count "
        "= {}",
        path, file.GetInt("llama.attention.key_length"), c.dim / c.q_heads);
  }
  if (file.Has("llama.rope.dimension_count") &&
      file.GetInt("llama.rope.dimension_count") != c.dim / c.q_heads) {
    ThrowInputError(
        "{}: llama.rope.dimension_count is {}, expected the head size {} (partial "
        "rotary embedding is unsupported)",
        path, file.GetInt("llama.rope.dimension_count"), c.dim / c.q_heads);
  }
  const GgufTensorInfo* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr) ThrowInputError("{}: tensor 'token_embd.weight' is missing", path);
  if (embd->dims.size() != 2) {
    ThrowInputError("{}: tensor 'token_embd.weight' has {} dimensions, expected 2", path,
                    embd->dims.size());
  }
  c.vocab_size = static_cast<int>(embd->dims[1]);
  c.Validate(path);

  LlamaWeights& w = model.weights;
  const int64_t q_dim = static_cast<int64_t>(c.q_heads) * c.head_dim();
  w.token_embedding = RequireMatrix(file, "token_embd.weight", c.vocab_size, c.dim);
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LlamaLayerWeights layer;
    layer.attn_norm = RequireVector(file, p + "attn_norm.weight", c.dim);
    layer.wq = RequireMatrix(file, p + "attn_q.weight", q_dim, c.dim);
    layer.wk = RequireMatrix(file, p + "attn_k.weight", c.kv_dim(), c.dim);
    layer.wv = RequireMatrix(file, p + "attn_v.weight", c.kv_dim(), c.dim);
    layer.wo = RequireMatrix(file, p + "attn_output.weight", c.dim, q_dim);
    layer.ffn_norm = RequireVector(file, p + "ffn_norm.weight", c.dim);
    layer.w1 = RequireMatrix(file, p + "ffn_gate.weight", c.hidden_dim, c.dim);
    layer.w2 = RequireMatrix(file, p + "ffn_down.weight", c.dim, c.hidden_dim);
    layer.w3 = RequireMatrix(file, p + "ffn_up.weight", c.hidden_dim, c.dim);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = RequireVector(file, "output_norm.weight", c.dim);
  if (file.FindTensor("output.weight") != nullptr) {
    w.classifier = RequireMatrix(file, "output.weight", c.vocab_size, c.dim);
    if (w.classifier == w.token_embedding) w.classifier.resize(0, 0);  // tied: keep one copy
  }
  if (file.FindTensor("rope_freqs.weight") != nullptr) {
    const RowMatrixXf f = RequireMatrix(file, "rope_freqs.weight", 1, c.head_dim() / 2);
    w.rope_freq_factors.assign(f.data(), f.data() + f.size());
  }
  w.Validate(path);
  LoadTokenizer(file, model);
  if (model.tokenizer && model.tokenizer->vocab_size() != c.vocab_size) {
    ThrowInputError("{}: tokenizer.ggml.tokens has {} entries, expected the embedding's {} rows",
                    path, model.tokenizer->vocab_size(), c.vocab_size);
  }
  return model;
}

}  // namespace kvsim::models
