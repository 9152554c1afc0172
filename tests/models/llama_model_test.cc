// The reference transformer against llama2.c's published greedy outputs for stories260K
// (models/data/stories260K/reference_greedy.json, computed by an independent numpy
// implementation of run.c), plus the KvState contract the eviction code relies on.
#include "models/llama_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/test_util.h"
#include "models/generate.h"
#include "models/gguf.h"
#include "models/llama2c.h"
#include "models/model_loader.h"

namespace kvsim::models {
namespace {

const std::string kDataDir = std::string(KVSIM_SOURCE_DIR) + "/models/data/stories260K";

nlohmann::json ReferenceCases() {
  std::ifstream in(kDataDir + "/reference_greedy.json");
  return nlohmann::json::parse(in)["cases"];
}

// Loaded once per binary: both files are ~1 MB, but the tests run under sanitizers too.
const LlamaModel& GgufModel() {
  static const LlamaModel model(LoadGgufLlama(kDataDir + "/stories260K.gguf").weights);
  return model;
}
const LlamaModel& Llama2cModel() {
  static const LlamaModel model(LoadLlama2cCheckpoint(kDataDir + "/stories260K.bin"));
  return model;
}

void ExpectReferenceGreedy(const LlamaModel& model) {
  for (const auto& c : ReferenceCases()) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto expected = c["generated_ids"].get<std::vector<int32_t>>();
    KvState state = model.NewState();
    GenerateOptions options;
    options.new_tokens = static_cast<int64_t>(expected.size());
    const Generation g = Generate(model, prompt, options, state);
    const std::vector<int32_t> generated(
        g.tokens.begin() + static_cast<std::ptrdiff_t>(prompt.size()), g.tokens.end());
    EXPECT_EQ(generated, expected) << "prompt '" << c["prompt"].get<std::string>() << "'";
    const auto& steps = c["per_step"];
    ASSERT_EQ(g.max_logits.size(), steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      // The reference rounds to 5 decimals: allow that rounding on top of the 1e-4 tolerance.
      EXPECT_NEAR(g.max_logits[i], steps[i]["logit"].get<float>(), 1e-4 + 5e-6)
          << "step " << i << " of prompt '" << c["prompt"].get<std::string>() << "'";
    }
  }
}

TEST(LlamaModel, GgufReproducesLlama2cReferenceGreedy) { ExpectReferenceGreedy(GgufModel()); }

TEST(LlamaModel, Llama2cCheckpointReproducesReferenceGreedy) {
  ExpectReferenceGreedy(Llama2cModel());
}

TEST(LlamaModel, GgufAndLlama2cGiveIdenticalLogits) {
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 432, 383};
  KvState a = GgufModel().NewState();
  KvState b = Llama2cModel().NewState();
  const RowMatrixXf la = GgufModel().Forward(tokens, a, nullptr, LogitsMode::kAll);
  const RowMatrixXf lb = Llama2cModel().Forward(tokens, b, nullptr, LogitsMode::kAll);
  ASSERT_EQ(la.rows(), 7);
  EXPECT_EQ(la, lb);  // the same float32 weights and the same code: bit-identical
}

TEST(LlamaModel, BlockPrefillMatchesTokenByTokenDecoding) {
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 432, 383, 286};
  KvState block_state = GgufModel().NewState();
  const RowMatrixXf block = GgufModel().Forward(tokens, block_state, nullptr, LogitsMode::kAll);
  KvState step_state = GgufModel().NewState();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const RowMatrixXf step =
        GgufModel().Forward(std::span<const int32_t>(&tokens[i], 1), step_state);
    EXPECT_LT((step.row(0) - block.row(static_cast<Eigen::Index>(i))).cwiseAbs().maxCoeff(), 1e-4f)
        << "position " << i;
  }
  for (int l = 0; l < block_state.layers(); ++l) {
    for (int h = 0; h < block_state.kv_heads(); ++h) {
      EXPECT_LT((block_state.keys(l, h) - step_state.keys(l, h)).cwiseAbs().maxCoeff(), 1e-5f);
    }
  }
}

TEST(KvState, DropRemovesOnlyTheListedPositionsAndKeepsOrder) {
  KvState state(1, 1, 2);
  for (int64_t p = 0; p < 5; ++p) {
    const float k[2] = {static_cast<float>(p), 0.0f};
    const float v[2] = {0.0f, static_cast<float>(10 * p)};
    state.Append(0, 0, p, k, v);
  }
  const std::vector<int64_t> drop = {3, 1, 42};
  state.Drop(0, 0, drop);
  const std::vector<int64_t> positions(state.positions(0, 0).begin(), state.positions(0, 0).end());
  EXPECT_EQ(positions, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(state.keys(0, 0)(1, 0), 2.0f);
  EXPECT_EQ(state.values(0, 0)(2, 1), 40.0f);
  EXPECT_EQ(state.next_position(), 5);
}

TEST(KvState, CopyIsAnIndependentSnapshot) {
  const std::vector<int32_t> prompt = {1, 403, 407, 261};
  KvState state = GgufModel().NewState();
  GgufModel().Forward(prompt, state);
  const KvState snapshot = state;
  KvState scratch = state;
  scratch.Drop(0, 0, std::vector<int64_t>{0, 1});
  const int32_t next = 378;
  GgufModel().Forward(std::span<const int32_t>(&next, 1), scratch);
  EXPECT_EQ(state.size(0, 0), 4);
  EXPECT_EQ(state.next_position(), 4);
  EXPECT_EQ(scratch.size(0, 0), 3);
  EXPECT_EQ(scratch.size(1, 0), 5);
  for (int l = 0; l < state.layers(); ++l) {
    for (int h = 0; h < state.kv_heads(); ++h) {
      EXPECT_EQ(RowMatrixXf(state.keys(l, h)), RowMatrixXf(snapshot.keys(l, h)));
    }
  }
}

// Dropping a cached position must give exactly what a model that never saw that position
// computes (brute force: the same tokens at the same positions, minus the dropped one). One
// layer, so every cached key and value depends only on its own token and position.
TEST(KvState, AttentionUsesResidentEntriesOnly) {
  LlamaConfig config;
  config.dim = 8;
  config.hidden_dim = 12;
  config.layers = 1;
  config.q_heads = 2;
  config.kv_heads = 1;
  config.vocab_size = 10;
  config.context_length = 16;
  LlamaWeights weights = RandomLlamaWeights(config, 7);
  // Scale up so attention is far from uniform and dropping a key visibly changes the output.
  for (auto& l : weights.layers) {
    l.wq *= 40.0f;
    l.wk *= 40.0f;
  }
  const LlamaModel model(weights);
  const std::vector<int32_t> prompt = {1, 5, 7, 3};
  KvState full = model.NewState();
  model.Forward(prompt, full);
  KvState dropped = full;
  dropped.Drop(0, 0, std::vector<int64_t>{1});
  const int32_t next = 4;
  const RowMatrixXf with_all = model.Forward(std::span<const int32_t>(&next, 1), full);
  const RowMatrixXf without = model.Forward(std::span<const int32_t>(&next, 1), dropped);
  EXPECT_GT((with_all - without).cwiseAbs().maxCoeff(), 1e-4f);

  // Brute force: the prompt without position 1, the others at their original positions, sees
  // exactly the resident set {0, 2, 3, 4}.
  KvState brute = model.NewState();
  const std::vector<int32_t> kept_tokens = {1, 7, 3, 4};
  const std::vector<int64_t> kept_positions = {0, 2, 3, 4};
  const RowMatrixXf reference = model.Forward(kept_tokens, kept_positions, brute);
  EXPECT_LT((reference - without).cwiseAbs().maxCoeff(), 1e-5f);
}

TEST(Generate, PromptLongerThanContextIsAnInputError) {
  const LlamaModel& model = Llama2cModel();  // seq_len 512
  const std::vector<int32_t> prompt(513, 1);
  KvState state = model.NewState();
  GenerateOptions options;
  try {
    Generate(model, prompt, options, state);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("513 tokens, longer than the model's context length 512"),
              std::string::npos)
        << e.what();
  }
  const std::vector<int32_t> fits(500, 1);
  options.new_tokens = 13;
  EXPECT_THROW(Generate(model, fits, options, state), InputError);
}

TEST(LoadModel, FindsTheLlama2cTokenizerNextToTheCheckpoint) {
  const LoadedModel loaded = LoadModel(kDataDir + "/stories260K.bin");
  EXPECT_EQ(loaded.format, "llama2c");
  ASSERT_TRUE(loaded.tokenizer.has_value());
  EXPECT_EQ(loaded.tokenizer->vocab_size(), 512);
  EXPECT_EQ(LoadModel(BundledModelPath()).format, "gguf");
}

TEST(LoadModel, FileOfAnotherKindIsNamed) {
  testing::TempDir dir;
  const std::string path = dir.File("notes.txt");
  std::ofstream(path) << "These are not the weights you are looking for.";
  try {
    LoadModel(path);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": llama2.c header field dim is"),
              std::string::npos)
        << e.what();
  }
}

TEST(LoadModel, TruncatedLlama2cCheckpointIsNamed) {
  testing::TempDir dir;
  const std::string path = dir.File("cut.bin");
  {
    std::ifstream in(kDataDir + "/stories260K.bin", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(path, std::ios::binary) << bytes.substr(0, 500000);
  }
  try {
    LoadLlama2cCheckpoint(path);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": llama2.c checkpoint has 500000 bytes, expected "
                                                "1056540"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kvsim::models
