// `kvsim stats`: writes the prompt-statistics sidecar beside the trace, reports an up-to-date
// sidecar without rewriting it, recomputes a stale one, refuses a corrupt one (exit 2, naming
// it) unless --force; and `kvsim synth` / `kvsim capture` write the sidecar unless --no-stats.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/test_util.h"
#include "traces/prompt_stats.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

using ::kvsim::testing::RunCommand;
using ::kvsim::testing::RunKvsim;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// Zero keys: every prompt query attends uniformly over [0, i], so column j's sum is the harmonic
// tail sum_{i=j}^{P-1} 1 / (i + 1), whatever the queries.
Trace UniformTrace(int64_t prompt, int64_t total, float query_value) {
  TraceMeta meta;
  meta.shape = {.name = "uniform", .layers = 3, .q_heads = 4, .kv_heads = 2, .head_dim = 4};
  meta.prompt_len = prompt;
  meta.total_len = total;
  meta.source = "test";
  for (int64_t t = 0; t < total; ++t) meta.token_ids.push_back(static_cast<int32_t>(t));
  std::vector<LayerTensors> layers(3);
  for (LayerTensors& l : layers) {
    l.queries = HeadTensor(4, total, 4);
    std::fill(l.queries.data(), l.queries.data() + l.queries.size(), query_value);
    l.keys = HeadTensor(2, total, 4);
    l.values = HeadTensor(2, total, 4);
  }
  return Trace(meta, std::move(layers));
}

std::string Stats(const std::string& trace, const std::string& flags = "") {
  return "stats " + flags + ShellQuote(trace);
}

TEST(StatsCli, WritesHarmonicTailsBesideTheTraceThenReportsUpToDate) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  WriteTrace(path, UniformTrace(50, 60, 0.5f));
  const auto r = RunKvsim(Stats(path));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("layer 3/3: computed"));
  EXPECT_THAT(r.out, HasSubstr("3 layers (3 computed, 0 reused)"));
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5", "t.h5.stats.h5"));

  const Trace trace = ReadTrace(path);
  for (int l = 0; l < 3; ++l) {
    const auto stats = LoadPromptStats(path, l, trace.layer(l), 50, OnStale::kError);
    ASSERT_TRUE(stats.has_value());
    for (int h = 0; h < 4; ++h) {
      double tail = 0.0;
      for (int j = 49; j >= 0; --j) {
        tail += 1.0 / (j + 1);
        EXPECT_NEAR(stats->column_sums[h][j], tail, 1e-6 * tail) << l << " " << h << " " << j;
      }
    }
  }

  const auto before = std::filesystem::last_write_time(PromptStatsPath(path));
  const auto again = RunKvsim(Stats(path));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("up to date (3 layers"));
  EXPECT_EQ(std::filesystem::last_write_time(PromptStatsPath(path)), before);
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5", "t.h5.stats.h5"));

  const auto forced = RunKvsim(Stats(path, "--force "));
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_THAT(forced.out, HasSubstr("(3 computed, 0 reused)"));
}

TEST(StatsCli, ChangedPromptLayerIsRecomputedOthersReused) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  Trace trace = UniformTrace(50, 60, 0.5f);
  WriteTrace(path, trace);
  ASSERT_EQ(RunKvsim(Stats(path)).exit_code, 0);
  trace.mutable_layer(2).keys.Row(0, 10)[1] = 3.0f;  // one prompt key of layer 2
  WriteTrace(path, trace);
  const auto r = RunKvsim(Stats(path));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("layer 1/3: up to date"));
  EXPECT_THAT(r.out, HasSubstr("layer 3/3: computed"));
  EXPECT_THAT(r.out, HasSubstr("(1 computed, 2 reused)"));
  const Trace changed = ReadTrace(path);
  EXPECT_TRUE(LoadPromptStats(path, 2, changed.layer(2), 50, OnStale::kError).has_value());
}

TEST(StatsCli, CorruptSidecarFailsNamingItUnlessForced) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  WriteTrace(path, UniformTrace(20, 24, 0.5f));
  std::ofstream(PromptStatsPath(path)) << "garbage";
  const auto r = RunKvsim(Stats(path));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr(PromptStatsPath(path).string() + ": not an HDF5 file"));
  const auto forced = RunKvsim(Stats(path, "--force "));
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5", "t.h5.stats.h5"));
  EXPECT_EQ(RunKvsim(Stats(path)).exit_code, 0);
}

TEST(StatsCli, MissingTraceFailsAndWritesNothing) {
  TempDir dir;
  const auto r = RunKvsim(Stats(dir.File("none.h5")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("none.h5"));
  EXPECT_TRUE(dir.Entries().empty());
}

TEST(StatsCli, SynthWritesTheSidecarUnlessNoStats) {
  TempDir dir;
  const std::string args = "synth --shape stories260k --layers 2 --prompt 64 --decode 4 -o ";
  const auto r = RunKvsim(args + ShellQuote(dir.File("a.h5")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(RunKvsim(args + ShellQuote(dir.File("b.h5")) + " --no-stats").exit_code, 0);
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("a.h5", "a.h5.stats.h5", "b.h5"));
  const auto check = RunKvsim(Stats(dir.File("a.h5")));
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_THAT(check.out, HasSubstr("up to date"));
}

TEST(StatsCli, CaptureWritesTheSidecarUnlessNoStats) {
  TempDir dir;
  const std::string capture = "cd " + ShellQuote(KVSIM_SOURCE_DIR) + " && " +
                              ShellQuote(KVSIM_BINARY) +
                              " capture --prompt 'Once upon a time' --decode 4 -o ";
  const auto r = RunCommand(capture + ShellQuote(dir.File("a.h5")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(RunCommand(capture + ShellQuote(dir.File("b.h5")) + " --no-stats").exit_code, 0);
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("a.h5", "a.h5.stats.h5", "b.h5"));
  const auto check = RunKvsim(Stats(dir.File("a.h5")));
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_THAT(check.out, HasSubstr("up to date"));
}

}  // namespace
}  // namespace kvsim::traces
