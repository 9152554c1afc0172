#pragma once
// GGUF reader (the llama.cpp model file format, versions 2 and 3; spec: ggml docs/gguf.md):
// header, metadata key/values, tensor directory, and dequantisation of F32, F16, BF16 and Q8_0
// tensors to float32. LoadGgufLlama() turns a file of architecture "llama" into LlamaWeights and
// its embedded SentencePiece vocabulary (tokenizer.ggml.model = "llama") into a Tokenizer.
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "models/llama_model.h"
#include "models/tokenizer.h"

namespace kvsim::models {

// ggml_type values of the tensor types we can read (others are named in errors only).
enum class GgufType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };
// The ggml name of a ggml_type id ("q4_K", ...), or "type <id>" when unknown.
std::string GgufTypeName(uint32_t type);

// One metadata value. Arrays of strings/numbers are flattened to vectors; integers of every
// width widen to int64 (uint64 values above INT64_MAX are rejected), floats to double.
using GgufValue = std::variant<int64_t,
                               double,
                               bool,
                               std::string,
                               std::vector<int64_t>,
                               std::vector<double>,
                               std::vector<std::string>>;

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the contiguous (fastest) extent
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the data section
  int64_t elements() const;
};

class GgufFile {
 public:
  // Reads the whole file and parses header, metadata and tensor directory. Throws InputError
  // naming the path and what was wrong (bad magic, unsupported version, truncated at which key
  // or tensor, tensor data past the end of the file).
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  bool Has(const std::string& key) const { return metadata_.count(key) != 0; }
  // Typed getters: throw InputError naming the key if it is missing or of another type.
  int64_t GetInt(const std::string& key) const;
  double GetFloat(const std::string& key) const;  // accepts integer values too
  const std::string& GetString(const std::string& key) const;
  const std::vector<std::string>& GetStringArray(const std::string& key) const;
  std::vector<double> GetFloatArray(const std::string& key) const;
  const std::vector<int64_t>& GetIntArray(const std::string& key) const;

  const GgufTensorInfo* FindTensor(const std::string& name) const;
  // The tensor as float32, row-major [dims[1], dims[0]] (a 1-D tensor is one row). Throws
  // InputError naming the tensor and its type if the type is not F32/F16/BF16/Q8_0, or if it
  // has more than 2 dimensions.
  RowMatrixXf ReadMatrix(const GgufTensorInfo& info) const;

 private:
  void CheckTensorLayout(uint64_t file_bytes, uint64_t alignment) const;
  std::string path_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::vector<uint8_t> bytes_;
  uint64_t data_offset_ = 0;
};

// IEEE half -> float (exact; subnormals, infinities and NaN included).
float HalfToFloat(uint16_t h);
// Dequantises `n` (a multiple of 32) Q8_0 values: blocks of {fp16 scale d, int8 q[32]}, x = d*q.
void DequantizeQ8_0(const uint8_t* blocks, int64_t n, float* out);

struct GgufModel {
  LlamaWeights weights;
  std::optional<Tokenizer> tokenizer;  // absent if the file has no supported vocabulary
  std::string tokenizer_problem;       // why it is absent (names the key and value)
};

// Loads a Llama-architecture GGUF. Errors name the key or tensor: general.architecture other
// than "llama", a missing llama.* key, a missing tensor, a tensor of another shape, an
// unsupported tensor type. A vocabulary of another tokenizer.ggml.model (e.g. "gpt2") is not an
// error: the model loads without a tokenizer and tokenizer_problem says why.
GgufModel LoadGgufLlama(const std::string& path);

}  // namespace kvsim::models
