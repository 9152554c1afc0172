#include "models/llama2c.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::models {

LlamaWeights LoadLlama2cCheckpoint(const std::string& path) {
  RegisterInputFile(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowInputError("{}: cannot open llama2.c checkpoint", path);
  int32_t header[7];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  if (!in) ThrowInputError("{}: truncated llama2.c checkpoint: no 28-byte header", path);
  uint32_t magic;
  std::memcpy(&magic, header, sizeof(magic));
  if (magic == 0x616b3432u) {  // "ak42": llama2.c export.py version 1/2
    ThrowInputError(
        "{}: llama2.c export version {} ('ak42' magic) is unsupported, expected the "
        "legacy version-0 format (export.py --version 0)",
        path, header[1]);
  }
  // Bounds far above any llama2.c model, so that the size arithmetic below cannot overflow and
  // a file of another kind fails here with a clear message.
  const char* const kFields[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                  "n_kv_heads", "vocab_size", "seq_len"};
  const int32_t kMax[7] = {1 << 16, 1 << 18, 1 << 10, 1 << 10, 1 << 10, 1 << 22, 1 << 22};
  for (int i = 0; i < 7; ++i) {
    const int64_t value = i == 5 ? std::abs(static_cast<int64_t>(header[i])) : header[i];
    if (value < 1 || value > kMax[i]) {
      ThrowInputError(
          "{}: llama2.c header field {} is {}, expected 1..{} (not a llama2.c "
          "checkpoint, nor a GGUF file?)",
          path, kFields[i], header[i], kMax[i]);
    }
  }
  LlamaConfig c;
  c.dim = header[0];
  c.hidden_dim = header[1];
  c.layers = header[2];
  c.q_heads = header[3];
  c.kv_heads = header[4];
  const bool shared_classifier = header[5] > 0;
  c.vocab_size = header[5] < 0 ? -header[5] : header[5];
  c.context_length = header[6];
  c.rope_theta = 10000.0f;
  c.rms_eps = 1e-5f;
  c.Validate(path +
             " (llama2.c header {dim, hidden_dim, n_layers, n_heads, n_kv_heads, "
             "vocab_size, seq_len})");

  const int64_t dim = c.dim;
  const int64_t q_dim = static_cast<int64_t>(c.q_heads) * c.head_dim();
  const int64_t kv_dim = c.kv_dim();
  const int64_t hidden = c.hidden_dim;
  const int64_t layers = c.layers;
  const int64_t rope_floats = static_cast<int64_t>(c.context_length) * c.head_dim();
  const int64_t floats =
      c.vocab_size * dim +
      layers * (2 * dim + q_dim * dim + 2 * kv_dim * dim + dim * q_dim + 3 * hidden * dim) + dim +
      rope_floats + (shared_classifier ? 0 : c.vocab_size * dim);
  const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  const int64_t expected_bytes = static_cast<int64_t>(sizeof(header)) + 4 * floats;
  if (file_bytes != expected_bytes) {
    ThrowInputError(
        "{}: llama2.c checkpoint has {} bytes, expected {} for dim={} hidden_dim={} "
        "n_layers={} n_heads={} n_kv_heads={} vocab_size={} seq_len={}",
        path, file_bytes, expected_bytes, c.dim, c.hidden_dim, c.layers, c.q_heads, c.kv_heads,
        header[5], c.context_length);
  }

  auto read = [&](float* dst, int64_t n) {
    in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n * 4));
    KVSIM_ASSERT(in, "{}: short read after the size check", path);
  };
  auto matrix = [&](int64_t rows, int64_t cols) {
    RowMatrixXf m(rows, cols);
    read(m.data(), rows * cols);
    return m;
  };
  LlamaWeights w;
  w.config = c;
  w.layers.resize(static_cast<size_t>(layers));
  w.token_embedding = matrix(c.vocab_size, dim);
  // Tensors are stored all-layers-at-once, one kind after another.
  for (auto& l : w.layers) l.attn_norm = matrix(1, dim).row(0).transpose();
  for (auto& l : w.layers) l.wq = matrix(q_dim, dim);
  for (auto& l : w.layers) l.wk = matrix(kv_dim, dim);
  for (auto& l : w.layers) l.wv = matrix(kv_dim, dim);
  for (auto& l : w.layers) l.wo = matrix(dim, q_dim);
  for (auto& l : w.layers) l.ffn_norm = matrix(1, dim).row(0).transpose();
  for (auto& l : w.layers) l.w1 = matrix(hidden, dim);
  for (auto& l : w.layers) l.w2 = matrix(dim, hidden);
  for (auto& l : w.layers) l.w3 = matrix(hidden, dim);
  w.final_norm = matrix(1, dim).row(0).transpose();
  in.seekg(rope_floats * 4, std::ios::cur);  // freq_cis_real/imag: recomputed by the model
  if (!shared_classifier) w.classifier = matrix(c.vocab_size, dim);
  w.Validate(path);
  return w;
}

}  // namespace kvsim::models
