#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

using ::kvsim::testing::RunKvsim;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// A trace whose keys are all zero: every query attends uniformly over positions [0, t], so the
// entropy at step t is ln(t + 1) and the sink mass min(4, t + 1) / (t + 1).
Trace UniformAttentionTrace(int64_t total, int64_t prompt) {
  TraceMeta meta;
  meta.shape = {.name = "uniform", .layers = 2, .q_heads = 4, .kv_heads = 2, .head_dim = 2};
  meta.prompt_len = prompt;
  meta.total_len = total;
  meta.source = "test";
  for (int64_t t = 0; t < total; ++t) meta.token_ids.push_back(static_cast<int32_t>(t));
  std::vector<LayerTensors> layers(2);
  for (LayerTensors& l : layers) {
    l.queries = HeadTensor(4, total, 2);
    for (size_t i = 0; i < l.queries.size(); ++i)
      l.queries.data()[i] = 0.25f * static_cast<float>(i % 7);
    l.keys = HeadTensor(2, total, 2);
    l.values = HeadTensor(2, total, 2);
  }
  return Trace(meta, std::move(layers));
}

TEST(Inspect, JsonReportsShapeAndUniformAttentionStats) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), UniformAttentionTrace(10, 6));
  const auto r = RunKvsim("inspect --json " + ShellQuote(dir.File("t.h5")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["name"], "uniform");
  EXPECT_EQ(j["model"]["q_heads"], 4);
  EXPECT_EQ(j["prompt_len"], 6);
  EXPECT_EQ(j["decode_len"], 4);
  EXPECT_EQ(j["total_len"], 10);
  EXPECT_EQ(j["storage"], "float16");
  EXPECT_EQ(j["file_bytes"], std::filesystem::file_size(dir.File("t.h5")));
  EXPECT_EQ(j["sampled_steps"], nlohmann::json({6, 7, 8, 9}));
  double entropy = 0, sink = 0;
  for (int t = 6; t < 10; ++t) {
    entropy += std::log(t + 1.0) / 4;
    sink += 4.0 / (t + 1.0) / 4;
  }
  ASSERT_EQ(j["layers"].size(), 2u);
  for (const auto& layer : j["layers"]) {
    EXPECT_NEAR(layer["mean_entropy_nats"].get<double>(), entropy, 1e-5);
    EXPECT_NEAR(layer["mean_sink_mass"].get<double>(), sink, 1e-6);
  }
}

TEST(Inspect, SamplesAtMostSixteenEvenlySpacedDecodeSteps) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), UniformAttentionTrace(40, 9));  // 31 decode steps
  const auto r = RunKvsim("inspect --json " + ShellQuote(dir.File("t.h5")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto steps = nlohmann::json::parse(r.out)["sampled_steps"];
  ASSERT_EQ(steps.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(steps[i], 9 + i * 2) << i;  // (31 - 1) / 15 = 2
}

TEST(Inspect, TextOutputNamesModelAndStorage) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), UniformAttentionTrace(10, 6), {.storage = StorageType::kFloat32});
  const auto r = RunKvsim("inspect " + ShellQuote(dir.File("t.h5")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("uniform (layers 2, q_heads 4, kv_heads 2, head_dim 2"));
  EXPECT_THAT(r.out, HasSubstr("prompt 6, decode 4, total 10"));
  EXPECT_THAT(r.out, HasSubstr("float32"));
}

TEST(Inspect, WritesOutputFileAtomically) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), UniformAttentionTrace(10, 6));
  const auto r = RunKvsim("inspect --json " + ShellQuote(dir.File("t.h5")) + " -o " +
                          ShellQuote(dir.File("out.json")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5", "out.json"));
}

TEST(Inspect, MissingFileNamesItAndLeavesNoOutput) {
  TempDir dir;
  const auto r = RunKvsim("inspect --json " + ShellQuote(dir.File("nope.h5")) + " -o " +
                          ShellQuote(dir.File("out.json")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("nope.h5: no such file"));
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

TEST(Inspect, CorruptFileNamesItAndLeavesNoOutput) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), UniformAttentionTrace(40, 9));
  std::filesystem::resize_file(dir.File("t.h5"), std::filesystem::file_size(dir.File("t.h5")) / 2);
  const auto r = RunKvsim("inspect " + ShellQuote(dir.File("t.h5")) + " -o " +
                          ShellQuote(dir.File("out.txt")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("t.h5: HDF5 cannot open the file (truncated or corrupt?)"));
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5"));
}

TEST(Inspect, MissingArgumentFails) {
  const auto r = RunKvsim("inspect");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("trace is required"));
}

}  // namespace
}  // namespace kvsim::traces
