#include "models/gguf.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>

#include "common/error.h"
#include "common/test_util.h"

namespace kvsim::models {
namespace {

const std::string kDataDir = std::string(KVSIM_SOURCE_DIR) + "/models/data/stories260K";

// Writes GGUF v3 files (ggml docs/gguf.md) for the tests: little-endian, 32-byte alignment.
class GgufBuilder {
 public:
  void String(const std::string& key, const std::string& value) {
    Key(key, 8);
    Str(kv_, value);
    ++n_kv_;
  }
  void U32(const std::string& key, uint32_t value) {
    Key(key, 4);
    Put(kv_, value);
    ++n_kv_;
  }
  void F32(const std::string& key, float value) {
    Key(key, 6);
    Put(kv_, value);
    ++n_kv_;
  }
  void StringArray(const std::string& key, const std::vector<std::string>& values) {
    Key(key, 9);
    Put(kv_, uint32_t{8});
    Put(kv_, static_cast<uint64_t>(values.size()));
    for (const auto& v : values) Str(kv_, v);
    ++n_kv_;
  }
  // `dims` in ggml order (contiguous extent first); `data` the raw bytes of `type`.
  void Tensor(const std::string& name,
              std::vector<uint64_t> dims,
              uint32_t type,
              const std::string& data) {
    Str(infos_, name);
    Put(infos_, static_cast<uint32_t>(dims.size()));
    for (const uint64_t d : dims) Put(infos_, d);
    Put(infos_, type);
    Put(infos_, static_cast<uint64_t>(data_.size()));
    data_ += data;
    data_.resize((data_.size() + 31) / 32 * 32, '\0');
    ++n_tensors_;
  }
  std::string Build() const {
    std::string out = "GGUF";
    Put(out, uint32_t{3});
    Put(out, n_tensors_);
    Put(out, n_kv_);
    out += kv_ + infos_;
    out.resize((out.size() + 31) / 32 * 32, '\0');
    return out + data_;
  }

 private:
  template <typename T>
  static void Put(std::string& out, T value) {
    out.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  static void Str(std::string& out, const std::string& s) {
    Put(out, static_cast<uint64_t>(s.size()));
    out += s;
  }
  void Key(const std::string& key, uint32_t type) {
    Str(kv_, key);
    Put(kv_, type);
  }

  uint64_t n_kv_ = 0;
  uint64_t n_tensors_ = 0;
  std::string kv_;
  std::string infos_;
  std::string data_;
};

// float -> half by truncation, flushing values below the smallest normal half to zero. The
// tests compare against HalfToFloat of the bits written, so the rounding mode does not matter.
uint16_t FloatToHalf(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int exponent = static_cast<int>((bits >> 23) & 0xFF) - 127 + 15;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  if (exponent >= 31) return static_cast<uint16_t>(sign | 0x7BFFu);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exponent) << 10) |
                               ((bits >> 13) & 0x3FFu));
}

enum class Encoding { kF32, kF16, kQ8_0 };

// Encodes `m` ([rows, cols] row-major) as a GGUF tensor and replaces `m` by exactly what the
// encoded bytes represent.
std::string Encode(RowMatrixXf& m, Encoding encoding) {
  std::string bytes;
  float* p = m.data();
  const auto n = static_cast<size_t>(m.size());
  switch (encoding) {
    case Encoding::kF32:
      bytes.assign(reinterpret_cast<const char*>(p), n * 4);
      break;
    case Encoding::kF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToHalf(p[i]);
        bytes.append(reinterpret_cast<const char*>(&h), 2);
        p[i] = HalfToFloat(h);
      }
      break;
    case Encoding::kQ8_0:
      for (size_t b = 0; b < n / 32; ++b) {
        float amax = 0.0f;
        for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(p[b * 32 + i]));
        const uint16_t d_bits = FloatToHalf(amax / 127.0f);
        const float d = HalfToFloat(d_bits);
        bytes.append(reinterpret_cast<const char*>(&d_bits), 2);
        for (size_t i = 0; i < 32; ++i) {
          const float q =
              d == 0.0f ? 0.0f : std::clamp(std::round(p[b * 32 + i] / d), -127.f, 127.f);
          const auto qi = static_cast<int8_t>(q);
          bytes.push_back(static_cast<char>(qi));
          p[b * 32 + i] = d * static_cast<float>(qi);
        }
      }
      break;
  }
  return bytes;
}

uint32_t TypeId(Encoding e) { return e == Encoding::kF32 ? 0u : e == Encoding::kF16 ? 1u : 8u; }

LlamaConfig TinyConfig() {
  LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.layers = 2;
  c.q_heads = 4;
  c.kv_heads = 2;
  c.vocab_size = 32;
  c.context_length = 64;
  c.rope_theta = 500000.0f;
  c.rms_eps = 1e-6f;
  return c;
}

// Writes `w` as a Llama GGUF with matrices in `encoding` (norms stay f32, as llama.cpp keeps
// them) and updates `w` to the values the file represents. `override_type` forces the type id
// of blk.0.attn_q.weight (for the unsupported-type test).
std::string WriteLlamaGguf(LlamaWeights& w,
                           Encoding encoding,
                           const std::string& arch = "llama",
                           uint32_t override_type = UINT32_MAX) {
  const LlamaConfig& c = w.config;
  GgufBuilder b;
  b.String("general.architecture", arch);
  b.U32(arch + ".embedding_length", static_cast<uint32_t>(c.dim));
  b.U32(arch + ".feed_forward_length", static_cast<uint32_t>(c.hidden_dim));
  b.U32(arch + ".block_count", static_cast<uint32_t>(c.layers));
  b.U32(arch + ".attention.head_count", static_cast<uint32_t>(c.q_heads));
  b.U32(arch + ".attention.head_count_kv", static_cast<uint32_t>(c.kv_heads));
  b.U32(arch + ".context_length", static_cast<uint32_t>(c.context_length));
  b.F32(arch + ".rope.freq_base", c.rope_theta);
  b.F32(arch + ".attention.layer_norm_rms_epsilon", c.rms_eps);
  b.String("tokenizer.ggml.model", "gpt2");
  auto matrix = [&](const std::string& name, RowMatrixXf& m, uint32_t type_override) {
    const std::string bytes = Encode(m, encoding);
    b.Tensor(name, {static_cast<uint64_t>(m.cols()), static_cast<uint64_t>(m.rows())},
             type_override == UINT32_MAX ? TypeId(encoding) : type_override, bytes);
  };
  auto vector = [&](const std::string& name, const Eigen::VectorXf& v) {
    b.Tensor(
        name, {static_cast<uint64_t>(v.size())}, 0,
        std::string(reinterpret_cast<const char*>(v.data()), static_cast<size_t>(v.size()) * 4));
  };
  matrix("token_embd.weight", w.token_embedding, UINT32_MAX);
  for (int l = 0; l < c.layers; ++l) {
    LlamaLayerWeights& layer = w.layers[static_cast<size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    vector(p + "attn_norm.weight", layer.attn_norm);
    matrix(p + "attn_q.weight", layer.wq, l == 0 ? override_type : UINT32_MAX);
    matrix(p + "attn_k.weight", layer.wk, UINT32_MAX);
    matrix(p + "attn_v.weight", layer.wv, UINT32_MAX);
    matrix(p + "attn_output.weight", layer.wo, UINT32_MAX);
    vector(p + "ffn_norm.weight", layer.ffn_norm);
    matrix(p + "ffn_gate.weight", layer.w1, UINT32_MAX);
    matrix(p + "ffn_down.weight", layer.w2, UINT32_MAX);
    matrix(p + "ffn_up.weight", layer.w3, UINT32_MAX);
  }
  vector("output_norm.weight", w.final_norm);
  matrix("output.weight", w.classifier, UINT32_MAX);
  return b.Build();
}

LlamaWeights TinyWeights() {
  LlamaWeights w = RandomLlamaWeights(TinyConfig(), 11);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (auto& l : w.layers) {
    for (auto& x : l.attn_norm) x = u(rng);
    for (auto& x : l.ffn_norm) x = u(rng);
  }
  w.classifier = RandomLlamaWeights(TinyConfig(), 12).token_embedding;  // separate classifier
  return w;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs `f`, expects an InputError, and checks its message contains every `needle`.
template <typename F>
void ExpectInputError(F f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    for (const auto& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "message '" << e.what() << "' lacks '" << needle << "'";
    }
  }
}

TEST(Gguf, HalfToFloatMatchesHandComputedValues) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);        // 1365/4096
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);               // largest finite half
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x8000), -0.0f);
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
}

TEST(Gguf, DequantizesAHandComputedQ8_0Block) {
  // d = 0.5 (half 0x3800), q = 0, 1, -1, 2, -2, ..., then 127 and -127 at the end.
  uint8_t block[34];
  block[0] = 0x00;
  block[1] = 0x38;
  std::vector<float> expected(32);
  for (int i = 0; i < 32; ++i) {
    const int q = i == 30 ? 127 : i == 31 ? -127 : (i % 2 == 1 ? 1 : -1) * ((i + 1) / 2);
    block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
    expected[static_cast<size_t>(i)] = 0.5f * static_cast<float>(q);
  }
  std::vector<float> out(32);
  DequantizeQ8_0(block, 32, out.data());
  EXPECT_EQ(out, expected);
  EXPECT_EQ(out[3], 1.0f);  // q = 2
  EXPECT_EQ(out[31], -63.5f);
}

TEST(Gguf, ReadsStories260KMetadata) {
  const GgufFile file(kDataDir + "/stories260K.gguf");
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.GetString("general.architecture"), "llama");
  EXPECT_EQ(file.GetInt("llama.block_count"), 5);
  EXPECT_NEAR(file.GetFloat("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_EQ(file.GetStringArray("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(file.tensors().size(), 48u);
  ExpectInputError([&] { file.GetInt("general.architecture"); },
                   {"general.architecture", "expected an integer"});
  ExpectInputError([&] { file.GetInt("llama.no_such_key"); }, {"llama.no_such_key", "missing"});
}

TEST(Gguf, LoadsF16AndQ8_0ModelsToTheValuesTheyEncode) {
  for (const Encoding e : {Encoding::kF32, Encoding::kF16, Encoding::kQ8_0}) {
    LlamaWeights expected = TinyWeights();
    testing::TempDir dir;
    const std::string path = dir.File("tiny.gguf");
    WriteFile(path, WriteLlamaGguf(expected, e));
    const GgufModel loaded = LoadGgufLlama(path);
    const LlamaWeights& w = loaded.weights;
    EXPECT_EQ(w.config.vocab_size, 32);
    EXPECT_EQ(w.config.rope_theta, 500000.0f);
    EXPECT_EQ(w.config.rms_eps, 1e-6f);
    EXPECT_EQ(w.token_embedding, expected.token_embedding);
    EXPECT_EQ(w.classifier, expected.classifier);
    EXPECT_EQ(w.layers[1].wq, expected.layers[1].wq);
    EXPECT_EQ(w.layers[1].w2, expected.layers[1].w2);
    EXPECT_EQ(w.layers[0].ffn_norm, expected.layers[0].ffn_norm);
    const std::vector<int32_t> tokens = {1, 5, 9, 30};
    const LlamaModel a(expected);
    const LlamaModel b(w);
    KvState sa = a.NewState();
    KvState sb = b.NewState();
    EXPECT_EQ(a.Forward(tokens, sa, nullptr, LogitsMode::kAll),
              b.Forward(tokens, sb, nullptr, LogitsMode::kAll));
    // tokenizer.ggml.model "gpt2" is not an error: the model loads without a tokenizer.
    EXPECT_FALSE(loaded.tokenizer.has_value());
    EXPECT_NE(loaded.tokenizer_problem.find("tokenizer.ggml.model is 'gpt2'"), std::string::npos)
        << loaded.tokenizer_problem;
  }
}

TEST(Gguf, BadMagicIsNamed) {
  testing::TempDir dir;
  const std::string path = dir.File("not.gguf");
  WriteFile(path, "GGML\x03\x00\x00\x00 and more bytes than a header");
  ExpectInputError([&] { GgufFile file(path); }, {path, "bad magic", "GGUF"});
}

TEST(Gguf, TruncatedFilesNameWhereTheyEnd) {
  const std::string bytes = ReadBytes(kDataDir + "/stories260K.gguf");
  testing::TempDir dir;
  const std::string in_metadata = dir.File("meta.gguf");
  WriteFile(in_metadata, bytes.substr(0, 2000));  // inside tokenizer.ggml.tokens
  ExpectInputError([&] { GgufFile file(in_metadata); },
                   {in_metadata, "truncated", "tokenizer.ggml.tokens"});
  const std::string in_data = dir.File("data.gguf");
  WriteFile(in_data, bytes.substr(0, bytes.size() - 1000));
  ExpectInputError([&] { GgufFile file(in_data); },
                   {in_data, "blk.4.ffn_up.weight", "past the end of the file"});
}

TEST(Gguf, UnsupportedArchitectureNamesTheKey) {
  LlamaWeights w = TinyWeights();
  testing::TempDir dir;
  const std::string path = dir.File("falcon.gguf");
  WriteFile(path, WriteLlamaGguf(w, Encoding::kF32, "falcon"));
  ExpectInputError([&] { LoadGgufLlama(path); },
                   {path, "general.architecture", "'falcon'", "expected 'llama'"});
}

TEST(Gguf, UnsupportedTensorTypeNamesTensorAndType) {
  LlamaWeights w = TinyWeights();
  testing::TempDir dir;
  const std::string path = dir.File("q4k.gguf");
  WriteFile(path, WriteLlamaGguf(w, Encoding::kF32, "llama", /*q4_K=*/12));
  ExpectInputError([&] { LoadGgufLlama(path); }, {path, "blk.0.attn_q.weight", "q4_K"});
}

TEST(Gguf, RelabelledTensorTypeIsRejected) {
  LlamaWeights w = TinyWeights();
  testing::TempDir dir;
  std::string bytes = WriteLlamaGguf(w, Encoding::kF32);
  // The tensor info after the name: n_dims (u32), n_dims x u64 extents, then the type (u32).
  const std::string name = "blk.0.attn_q.weight";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, bytes.data() + at + name.size(), 4);
  const size_t type_at = at + name.size() + 4 + 8 * n_dims;
  uint32_t type = 0;
  std::memcpy(&type, bytes.data() + type_at, 4);
  ASSERT_EQ(type, 0u);  // f32
  type = 1;             // relabelled f16: half the bytes the data spans
  std::memcpy(bytes.data() + type_at, &type, 4);
  const std::string path = dir.File("relabelled.gguf");
  WriteFile(path, bytes);
  ExpectInputError([&] { LoadGgufLlama(path); }, {path, name, "labelled f16", "wrong type"});
}

TEST(Gguf, NonFiniteWeightIsRejectedNamingTheTensor) {
  LlamaWeights w = TinyWeights();
  w.layers[1].w2(2, 3) = std::numeric_limits<float>::quiet_NaN();
  testing::TempDir dir;
  const std::string path = dir.File("nan.gguf");
  WriteFile(path, WriteLlamaGguf(w, Encoding::kF32));
  ExpectInputError([&] { LoadGgufLlama(path); }, {path, "blk.1.ffn_down.weight", "non-finite"});
}

TEST(Gguf, MissingTensorIsNamed) {
  GgufBuilder b;
  b.String("general.architecture", "llama");
  for (const char* key :
       {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
        "llama.attention.head_count", "llama.context_length"}) {
    b.U32(key, 8);
  }
  testing::TempDir dir;
  const std::string path = dir.File("empty.gguf");
  WriteFile(path, b.Build());
  ExpectInputError([&] { LoadGgufLlama(path); }, {path, "token_embd.weight", "missing"});
}

}  // namespace
}  // namespace kvsim::models
