// `kvsim capture` and `kvsim generate` end to end, on the bundled stories260K model.
#include <gtest/gtest.h>

#include <fstream>

#include "common/test_util.h"
#include "traces/trace_io.h"

namespace kvsim {
namespace {

using ::kvsim::testing::RunCommand;
using ::kvsim::testing::RunKvsim;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;

const std::string kDataDir = std::string(KVSIM_SOURCE_DIR) + "/models/data/stories260K";

// reference_greedy.json, prompt "Once upon a time": the prompt ids and the first 8 new tokens.
const std::vector<int32_t> kOnceUponATime8 = {1,   403, 407, 261, 378, 432, 383,
                                              286, 261, 376, 298, 315, 421};

TEST(CaptureCommand, WorksFromTheRepositoryRootWithTheBundledModel) {
  TempDir dir;
  const std::string out = dir.File("trace.h5");
  const auto r = RunCommand(
      "cd " + ShellQuote(KVSIM_SOURCE_DIR) + " && " + ShellQuote(KVSIM_BINARY) +
      " capture --prompt 'Once upon a time' --decode 8 --pre-rope -o " + ShellQuote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("prompt 5, decode 8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Once upon a time, there was a little girl"), std::string::npos) << r.out;
  const traces::TraceReader reader(out);
  EXPECT_EQ(reader.meta().token_ids, kOnceUponATime8);
  EXPECT_EQ(reader.meta().prompt_len, 5);
  EXPECT_EQ(reader.meta().shape.name, "stories260K");
  EXPECT_EQ(reader.meta().shape.q_heads, 8);
  EXPECT_EQ(reader.meta().shape.kv_heads, 4);
  EXPECT_TRUE(reader.meta().has_pre_rope);
  EXPECT_EQ(reader.meta().storage, traces::StorageType::kFloat16);
  EXPECT_EQ(reader.meta().token_text[1], " Once");
}

TEST(CaptureCommand, Llama2cCheckpointAndPromptIdsGiveTheSameTokens) {
  TempDir dir;
  const std::string ids = dir.File("ids.txt");
  std::ofstream(ids) << "[1, 403, 407,\n 261, 378]\n";
  const std::string out = dir.File("trace.h5");
  const auto r =
      RunKvsim("capture --model " + ShellQuote(kDataDir + "/stories260K.bin") + " --prompt-ids " +
               ShellQuote(ids) + " --decode 8 --storage f32 -o " + ShellQuote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const traces::TraceReader reader(out);
  EXPECT_EQ(reader.meta().token_ids, kOnceUponATime8);
  EXPECT_EQ(reader.meta().storage, traces::StorageType::kFloat32);
}

TEST(CaptureCommand, PromptLongerThanContextFailsAndLeavesNoFile) {
  TempDir dir;
  const std::string ids = dir.File("ids.txt");
  {
    std::ofstream f(ids);
    for (int i = 0; i < 513; ++i) f << "1 ";
  }
  const std::string out = dir.File("trace.h5");
  const auto r = RunKvsim("capture --model " + ShellQuote(kDataDir + "/stories260K.bin") +
                          " --prompt-ids " + ShellQuote(ids) + " --decode 1 -o " + ShellQuote(out));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("513 tokens, longer than the model's context length 512"), std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"ids.txt"});
}

TEST(CaptureCommand, BadPromptIdsNameFileAndToken) {
  TempDir dir;
  const std::string ids = dir.File("ids.txt");
  std::ofstream(ids) << "1 403 x7 261";
  const auto r =
      RunKvsim("capture --prompt-ids " + ShellQuote(ids) + " -o " + ShellQuote(dir.File("t.h5")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(ids + ": token 2 is 'x7'"), std::string::npos) << r.err;
  std::ofstream(ids) << "1 403 600";
  const auto range =
      RunKvsim("capture --prompt-ids " + ShellQuote(ids) + " -o " + ShellQuote(dir.File("t.h5")));
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_NE(range.err.find("token 2 is 600, expected an id in [0, 512)"), std::string::npos)
      << range.err;
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"ids.txt"});
}

TEST(CaptureCommand, UnsupportedModelFileIsNamed) {
  TempDir dir;
  const std::string model = dir.File("model.gguf");
  std::ofstream(model, std::ios::binary) << "GGUF\x01";
  const auto r = RunKvsim("capture --model " + ShellQuote(model) + " --prompt hi -o " +
                          ShellQuote(dir.File("t.h5")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(model), std::string::npos) << r.err;
}

TEST(CaptureCommand, PromptOptionsAreExclusive) {
  TempDir dir;
  const std::string ids = dir.File("ids.txt");
  std::ofstream(ids) << "1";
  const auto r = RunKvsim("capture --prompt hi --prompt-ids " + ShellQuote(ids) + " -o " +
                          ShellQuote(dir.File("t.h5")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"ids.txt"});
}

TEST(GenerateCommand, PrintsTheReferenceGreedyStory) {
  const auto r = RunKvsim("generate --steps 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "Once upon a time, there was a little girl named Lily. She loved to play outside in "
            "the park. One day, she saw a big, red ball. She wanted to play with it, but it was "
            "too high.\nLily\n");
}

}  // namespace
}  // namespace kvsim
