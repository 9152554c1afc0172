// `kvsim recurrence`: recurrence.csv and recurrence_summary.csv (analysis/RESULTS_FORMAT.md), and
// bad input rejected with a message naming the argument and no output left behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "analysis/csv.h"
#include "common/test_util.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

using ::kvsim::testing::RunKvsim;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;
using ::testing::HasSubstr;

// One head, prompt of 4 orthogonal keys, decode queries each aimed at one prompt key (weight
// > 0.999), so with --importance topk:1 the target is the important token of each step.
traces::Trace TargetTrace(const std::vector<int>& targets) {
  constexpr int kDim = 16;
  constexpr int64_t kPrompt = 4;
  const auto total = kPrompt + static_cast<int64_t>(targets.size());
  traces::TraceMeta meta;
  meta.shape = {.name = "hand", .layers = 2, .q_heads = 1, .kv_heads = 1, .head_dim = kDim};
  meta.prompt_len = kPrompt;
  meta.total_len = total;
  meta.source = "test";
  meta.token_ids.assign(static_cast<size_t>(total), 0);
  std::vector<traces::LayerTensors> layers(2);
  for (traces::LayerTensors& layer : layers) {
    layer.queries = HeadTensor(1, total, kDim);
    layer.keys = HeadTensor(1, total, kDim);
    layer.values = HeadTensor(1, total, kDim);
    for (int64_t j = 0; j < kPrompt; ++j) layer.keys.Row(0, j)[j] = 4.0f;
    for (size_t i = 0; i < targets.size(); ++i) {
      layer.queries.Row(0, kPrompt + static_cast<int64_t>(i))[targets[i]] = 20.0f;
    }
  }
  return traces::Trace(meta, std::move(layers));
}

// Targets 0 0 1 0 2 2 0 1 3 0 (see tests/analysis/recurrence_test.cc): intervals {1:2, 2:1, 3:2,
// 5:1} per layer; 4 important tokens, 2 recurring, 1 long (W = 3).
TEST(RecurrenceCli, WritesIntervalsAndSummary) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), TargetTrace({0, 0, 1, 0, 2, 2, 0, 1, 3, 0}));
  const auto r = RunKvsim("recurrence " + ShellQuote(dir.File("t.h5")) + " -o " +
                          ShellQuote(dir.File("out")) + " --importance topk:1 --window 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CsvTable intervals = CsvTable::Read(dir.File("out/recurrence.csv"));
  EXPECT_EQ(intervals.header(), (std::vector<std::string>{"layer", "interval", "count"}));
  ASSERT_EQ(intervals.num_rows(), 8u);
  const std::vector<std::vector<int64_t>> expected = {{0, 1, 2}, {0, 2, 1}, {0, 3, 2}, {0, 5, 1},
                                                      {1, 1, 2}, {1, 2, 1}, {1, 3, 2}, {1, 5, 1}};
  for (size_t i = 0; i < expected.size(); ++i) {
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(intervals.Integer(i, c), expected[i][c]) << i;
  }
  const CsvTable summary = CsvTable::Read(dir.File("out/recurrence_summary.csv"));
  ASSERT_EQ(summary.num_rows(), 3u);  // layers 0, 1, all
  EXPECT_EQ(summary.Text(2, summary.Column("layer")), "all");
  EXPECT_EQ(summary.Integer(2, summary.Column("important_tokens")), 8);
  EXPECT_EQ(summary.Integer(2, summary.Column("recurring_tokens")), 4);
  EXPECT_EQ(summary.Integer(2, summary.Column("long_recurring_tokens")), 2);
  EXPECT_DOUBLE_EQ(summary.Number(2, summary.Column("long_recurrence_fraction")), 0.25);
  EXPECT_EQ(summary.Text(2, summary.Column("policy")), "");
  EXPECT_EQ(summary.Text(0, summary.Column("evicted_tokens")), "");
}

// streaming with 1 sink at budget 2 (hand computation in tests/analysis/recurrence_test.cc):
// targets 0 1 0 2 3 -> 3 evicted tokens recur per layer.
TEST(RecurrenceCli, SummarisesEvictionHarmPerPolicyAndBudget) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), TargetTrace({0, 1, 0, 2, 3}));
  const auto r =
      RunKvsim("recurrence " + ShellQuote(dir.File("t.h5")) + " -o " + ShellQuote(dir.File("o")) +
               " --importance topk:1 --policy streaming --param sinks=1 --budget 2 --budget 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CsvTable summary = CsvTable::Read(dir.File("o/recurrence_summary.csv"));
  ASSERT_EQ(summary.num_rows(), 6u);  // 2 budgets x (layers 0, 1, all)
  EXPECT_EQ(summary.Text(2, summary.Column("policy")), "streaming");
  EXPECT_EQ(summary.Text(2, summary.Column("params")), "sinks=1");
  EXPECT_EQ(summary.Text(2, summary.Column("budget")), "2");
  EXPECT_EQ(summary.Text(2, summary.Column("regime")), "bounded");
  EXPECT_EQ(summary.Integer(0, summary.Column("evicted_recurring")), 3);
  EXPECT_EQ(summary.Integer(2, summary.Column("evicted_recurring")), 6);
  EXPECT_EQ(summary.Integer(2, summary.Column("lost_important_events")), 6);
  EXPECT_EQ(summary.Text(5, summary.Column("budget")), "3");
}

TEST(RecurrenceCli, RejectsBadArgumentsWithoutOutput) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), TargetTrace({0, 1}));
  const std::string base =
      "recurrence " + ShellQuote(dir.File("t.h5")) + " -o " + ShellQuote(dir.File("out"));
  const struct {
    std::string args;
    std::string message;
  } cases[] = {
      {" --importance top:3", "--importance: 'top:3'"},
      {" --window 0", "--window"},
      {" --policy nosuch --budget 2", "nosuch"},
      {" --policy h2o", "--budget"},
      {" --policy h2o --budget 2 --param bogus=1", "bogus"},
      {" --policy h2o --budget 0.0p", "--budget"},
  };
  for (const auto& c : cases) {
    const auto r = RunKvsim(base + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args;
    EXPECT_FALSE(std::filesystem::exists(dir.File("out"))) << c.args;
  }
  const auto missing = RunKvsim("recurrence " + ShellQuote(dir.File("none.h5")) + " -o " +
                                ShellQuote(dir.File("out")));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("none.h5"));
  EXPECT_FALSE(std::filesystem::exists(dir.File("out")));
}

}  // namespace
}  // namespace kvsim::analysis
