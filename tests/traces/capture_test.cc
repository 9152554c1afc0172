#include "traces/capture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/test_util.h"
#include "models/model_loader.h"

namespace kvsim::traces {
namespace {

using ::kvsim::testing::TempDir;

const models::LoadedModel& Stories() {
  static const models::LoadedModel model = models::LoadModel(models::BundledModelPath());
  return model;
}

struct MemoryCapture {
  Trace trace;
  CaptureResult result;
};

MemoryCapture CaptureInMemory(const std::vector<int32_t>& prompt, CaptureOptions options) {
  MemoryCaptureSink sink(CaptureMeta(Stories().model, "stories260K", "capture:test",
                                     StorageType::kFloat32, options.with_pre_rope));
  CaptureResult result = Capture(Stories().model, &*Stories().tokenizer, prompt, options, sink);
  Trace trace = sink.TakeTrace(result.prompt_len);
  return {std::move(trace), std::move(result)};
}

TEST(Capture, RecordedKeysAndValuesAreTheCacheTheModelAttendedOver) {
  CaptureOptions options;
  options.decode_tokens = 12;
  const MemoryCapture c = CaptureInMemory({1, 403, 407, 261, 378}, options);
  const Trace& t = c.trace;
  ASSERT_EQ(t.meta().total_len, 17);
  EXPECT_EQ(t.meta().prompt_len, 5);
  for (int l = 0; l < t.num_layers(); ++l) {
    for (int h = 0; h < t.shape().kv_heads; ++h) {
      ASSERT_EQ(c.result.cache.size(l, h), 17);
      EXPECT_EQ(RowMatrixXf(t.Keys(l, h)), RowMatrixXf(c.result.cache.keys(l, h)));
      EXPECT_EQ(RowMatrixXf(t.Values(l, h)), RowMatrixXf(c.result.cache.values(l, h)));
    }
  }
}

TEST(Capture, GreedyTokensAndTextMatchTheReference) {
  CaptureOptions options;
  options.decode_tokens = 8;
  const MemoryCapture c = CaptureInMemory({1, 403, 407, 261, 378}, options);
  // reference_greedy.json, prompt "Once upon a time": 432 383 286 261 376 298 315 421.
  const std::vector<int32_t> expected = {1,   403, 407, 261, 378, 432, 383,
                                         286, 261, 376, 298, 315, 421};
  EXPECT_EQ(c.trace.meta().token_ids, expected);
  EXPECT_EQ(c.result.tokens, expected);
  EXPECT_EQ(c.result.text, "Once upon a time, there was a little girl");
  ASSERT_EQ(c.trace.meta().token_text.size(), 13u);
  EXPECT_EQ(c.trace.meta().token_text[0], "<s>");
  EXPECT_EQ(c.trace.meta().token_text[1], " Once");
}

// Independent check of the recorded RoPE: rotating the pre-RoPE query pair (x[2i], x[2i+1]) of
// position t by t * theta^(-2i/d), in double precision, gives the recorded post-RoPE query.
TEST(Capture, PostRopeIsThePreRopeRotatedByPosition) {
  CaptureOptions options;
  options.decode_tokens = 6;
  options.with_pre_rope = true;
  const MemoryCapture c = CaptureInMemory({1, 403, 407}, options);
  const LayerTensors& layer = c.trace.layer(2);
  const int d = c.trace.shape().head_dim;
  for (const auto& [pre, post] :
       {std::pair{&layer.queries_pre_rope, &layer.queries}, {&layer.keys_pre_rope, &layer.keys}}) {
    for (int h = 0; h < pre->heads(); ++h) {
      for (int64_t t = 0; t < pre->positions(); ++t) {
        for (int i = 0; i < d / 2; ++i) {
          const double angle = static_cast<double>(t) * std::pow(10000.0, -2.0 * i / d);
          const double x0 = pre->Row(h, t)[2 * i];
          const double x1 = pre->Row(h, t)[2 * i + 1];
          EXPECT_NEAR(post->Row(h, t)[2 * i], x0 * std::cos(angle) - x1 * std::sin(angle), 1e-5);
          EXPECT_NEAR(post->Row(h, t)[2 * i + 1], x0 * std::sin(angle) + x1 * std::cos(angle),
                      1e-5);
        }
      }
    }
  }
}

TEST(Capture, PrefillBlockSizeDoesNotChangeTheTrace) {
  CaptureOptions whole;
  whole.decode_tokens = 4;
  whole.prefill_block = 0;
  CaptureOptions blocks = whole;
  blocks.prefill_block = 2;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383};
  const MemoryCapture a = CaptureInMemory(prompt, whole);
  const MemoryCapture b = CaptureInMemory(prompt, blocks);
  EXPECT_EQ(a.trace.meta().token_ids, b.trace.meta().token_ids);
  for (int l = 0; l < a.trace.num_layers(); ++l) {
    for (int h = 0; h < a.trace.shape().q_heads; ++h) {
      EXPECT_LT((a.trace.Queries(l, h) - b.trace.Queries(l, h)).cwiseAbs().maxCoeff(), 1e-5f);
    }
  }
}

TEST(Capture, StreamedFileEqualsTheInMemoryCapture) {
  CaptureOptions options;
  options.decode_tokens = 5;
  options.with_pre_rope = true;
  options.prefill_block = 3;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  const MemoryCapture memory = CaptureInMemory(prompt, options);

  TempDir dir;
  const std::string path = dir.File("capture.h5");
  TraceWriterOptions writer_options;
  writer_options.storage = StorageType::kFloat32;
  writer_options.with_pre_rope = true;
  TraceWriter writer(
      path,
      CaptureMeta(Stories().model, "stories260K", "capture:test", StorageType::kFloat32, true),
      writer_options);
  TraceWriterSink sink(writer);
  const CaptureResult result =
      Capture(Stories().model, &*Stories().tokenizer, prompt, options, sink);
  writer.SetPromptLength(result.prompt_len);
  writer.Commit();

  const Trace read = ReadTrace(path);
  EXPECT_EQ(read.meta().token_ids, memory.trace.meta().token_ids);
  EXPECT_EQ(read.meta().token_text, memory.trace.meta().token_text);
  EXPECT_EQ(read.meta().prompt_len, 5);
  EXPECT_EQ(read.shape(), memory.trace.shape());
  for (int l = 0; l < read.num_layers(); ++l) EXPECT_EQ(read.layer(l), memory.trace.layer(l));
}

TEST(Capture, PromptPlusDecodeBeyondContextIsAnInputErrorAndLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.File("too_long.h5");
  CaptureOptions options;
  options.decode_tokens = 10;
  const std::vector<int32_t> prompt(static_cast<size_t>(Stories().model.config().context_length),
                                    1);
  try {
    TraceWriter writer(path, CaptureMeta(Stories().model, "stories260K", "capture:test",
                                         StorageType::kFloat16, false));
    TraceWriterSink sink(writer);
    Capture(Stories().model, nullptr, prompt, options, sink);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("context length"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(dir.Entries().empty());
}

}  // namespace
}  // namespace kvsim::traces

namespace kvsim::traces {
namespace {

using ::kvsim::testing::RunCommand;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;

const std::string kHfCapture = std::string(KVSIM_SOURCE_DIR) + "/traces/hf_capture.py";

// Runs `script` with KVSIM_PYTHON and traces/ on sys.path.
testing::CommandResult RunPython(const TempDir& dir, const std::string& script) {
  const std::string path = dir.File("driver.py");
  std::ofstream(path) << "import sys\nsys.path.insert(0, "
                      << "'" << KVSIM_SOURCE_DIR << "/traces')\n"
                      << script;
  return RunCommand(ShellQuote(KVSIM_PYTHON) + " " + ShellQuote(path));
}

bool PythonHas(const std::string& modules) {
  return RunCommand(ShellQuote(KVSIM_PYTHON) + " -c " + ShellQuote("import " + modules))
             .exit_code == 0;
}

// The script's h5py writer, driven with known arrays in two appends, yields a file TraceReader
// accepts, holding exactly those values.
TEST(HfCapture, WriterOutputIsATraceKvsimReads) {
  if (!PythonHas("h5py, numpy")) GTEST_SKIP() << KVSIM_PYTHON << " lacks h5py/numpy";
  TempDir dir;
  const std::string out = dir.File("hf.h5");
  const auto r = RunPython(dir, R"(
import numpy as np, hf_capture
L, Hq, Hkv, d = 2, 4, 2, 8
def block(begin, n):
    x = lambda h, layer, kind: (np.arange(h * n * d, dtype=np.float32).reshape(h, n, d)
                                + 1000 * layer + 100 * kind + 10 * begin) / 64
    return [{"q": x(Hq, l, 0), "k": x(Hkv, l, 1), "v": x(Hkv, l, 2),
             "q_pre_rope": x(Hq, l, 3), "k_pre_rope": x(Hkv, l, 4)} for l in range(L)]
with hf_capture.TraceFileWriter(sys.argv[1] if len(sys.argv) > 1 else ")" +
                                    out + R"(",
                                "tiny-hf", L, Hq, Hkv, d, 500000.0, source="test",
                                storage="f32", pre_rope=True) as w:
    w.append([1, 5, 9], ["<s>", "a", "b"], block(0, 3))
    w.append([7], ["c"], block(3, 1))
    w.commit(3)
)");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Trace t = ReadTrace(out);
  EXPECT_EQ(t.meta().token_ids, (std::vector<int32_t>{1, 5, 9, 7}));
  EXPECT_EQ(t.meta().token_text, (std::vector<std::string>{"<s>", "a", "b", "c"}));
  EXPECT_EQ(t.meta().prompt_len, 3);
  EXPECT_EQ(t.shape().name, "tiny-hf");
  EXPECT_EQ(t.shape().rope_theta, 500000.0);
  EXPECT_TRUE(t.meta().has_pre_rope);
  // layer 1, k (kind 1), KV head 1, position 3 (second block, begin 3, its row 0), dim 2:
  // (1*1*8 + 0*8 + 2 + 1000 + 100 + 30) / 64.
  EXPECT_EQ(t.Keys(1, 1)(3, 2), (8.0f + 2.0f + 1130.0f) / 64.0f);
  EXPECT_EQ(t.layer(0).queries_pre_rope.Row(3, 1)[7], (3 * 3 * 8 + 8 + 7 + 300.0f) / 64.0f);
  EXPECT_EQ(dir.Entries().size(), 2u);  // driver.py and hf.h5: no temporary left
}

// End to end on a tiny randomly initialised transformers Llama (no download): the recorded keys
// and values equal the model's own KV cache, and kvsim reads the trace.
TEST(HfCapture, RecordsTheModelsOwnCacheForATinyLlama) {
  if (!PythonHas("h5py, numpy, torch, transformers")) {
    GTEST_SKIP() << "HF capture test skipped: " << KVSIM_PYTHON
                 << " cannot import torch and transformers";
  }
  TempDir dir;
  const std::string out = dir.File("hf.h5");
  const auto r = RunPython(dir, R"(
import numpy as np, torch, h5py, hf_capture
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     attn_implementation="eager")
model = LlamaForCausalLM(config).eval()
out = ")" + out + R"("
with hf_capture.TraceFileWriter(out, "tiny-llama", 2, 4, 2, 8, 10000.0, storage="f32",
                                pre_rope=True) as w:
    ids = hf_capture.capture(model, [1, 5, 9, 3], 6, w, pre_rope=True, prefill_block=3)
    w.commit(4)
assert len(ids) == 10
with torch.no_grad():
    cache = model(torch.tensor([ids]), use_cache=True).past_key_values
def kv(cache, layer):  # transformers' cache layouts across versions
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer][0], cache[layer][1]
with h5py.File(out) as f:
    for l in range(2):
        k, v = kv(cache, l)
        assert np.allclose(f[f"layers/{l}/k"][:], k[0].numpy(), atol=1e-5), l
        assert np.allclose(f[f"layers/{l}/v"][:], v[0].numpy(), atol=1e-5), l
print("ok")
)");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const Trace t = ReadTrace(out);
  EXPECT_EQ(t.meta().total_len, 10);
  EXPECT_EQ(t.meta().prompt_len, 4);
}

}  // namespace
}  // namespace kvsim::traces
