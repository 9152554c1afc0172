// The resumable, distributed sweep (analysis/distributed_sweep.h, analysis/sweep_units.h): the
// same sweep.csv bytes as a one-shot RunSweep for any unit split and completion order, resume
// from the journal, refusal of a journal of other inputs, failing and --keep-going units, and
// --trace expansion. The MPI transport itself is tested under mpirun (tests/mpi).
#include "analysis/distributed_sweep.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/sweep.h"
#include "analysis/sweep_units.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/test_util.h"
#include "common/tiny_shape.h"
#include "sim/random_trace.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

using testing::TinyShape;

std::string WriteTrace(const TempDir& dir, const std::string& name, uint64_t seed) {
  const std::string path = dir.File(name);
  traces::WriteTrace(path, sim::RandomTrace(TinyShape(), 24, 36, seed));
  return path;
}

SweepPlan TinyPlan(const std::vector<std::string>& traces) {
  SweepPlan plan;
  plan.traces = traces;
  for (const char* name : {"full", "h2o", "snapkv", "oracle", "cake"}) {
    plan.policies.push_back({name, {}});
  }
  plan.policies[1].params.Set("recent_ratio", "0.25");
  for (const char* b : {"4", "8", "0.5p"}) plan.budgets.push_back(sim::Budget::Parse(b, "test"));
  plan.threads = 2;
  return plan;
}

// The one-shot sweep's sweep.csv, the reference for every distributed run.
std::string OneShotCsv(const SweepPlan& plan, const TempDir& dir) {
  const std::filesystem::path out = dir.path() / "oneshot";
  std::filesystem::create_directories(out);
  WriteSweepOutputs(out, plan, RunSweep(plan), "test");
  return ReadFileToString(out / "sweep.csv");
}

// Runs the tasks in reverse and reports them as if from two ranks: completion order and origin
// must not change the bytes.
class ReversingExecutor final : public UnitExecutor {
 public:
  int rank() const override { return 0; }
  int ranks() const override { return 2; }
  void Run(std::span<const std::string> tasks,
           const RunUnit& run,
           const UnitDone& done,
           const DescribeUnit& /*describe*/) override {
    for (size_t i = tasks.size(); i-- > 0;) {
      if (!done(static_cast<int>(i), static_cast<int>(i % 2), run(tasks[i]))) return;
    }
  }
};

DistributedSweepOptions Options(const std::filesystem::path& out, int cells_per_unit) {
  std::filesystem::create_directories(out);
  return {.out_dir = out, .command = "test", .keep_going = false, .cells_per_unit = cells_per_unit};
}

TEST(SweepUnits, CutsUnfinishedRunsAndOrdersLongestFirst) {
  FinishedCells finished;
  finished[{0, 2}] = {};
  finished[{0, 3}] = {};
  const std::vector<double> cost = {1.0, 10.0};
  const std::vector<SweepUnit> units = MakeUnits(2, 6, 2, cost, finished);
  // Trace 0: cells {0,1}, {4,5}; trace 1: {0,1}, {2,3}, {4,5}.
  ASSERT_EQ(units.size(), 5u);
  EXPECT_EQ(units[0].first_cell, 0);
  EXPECT_EQ(units[0].num_cells, 2);
  EXPECT_EQ(units[1].first_cell, 4);
  EXPECT_EQ(units[2].trace, 1);
  EXPECT_DOUBLE_EQ(units[2].cost, 20.0);
  EXPECT_EQ(LongestFirst(units), (std::vector<int>{2, 3, 4, 0, 1}));
  // Every unfinished cell exactly once.
  int cells = 0;
  for (const SweepUnit& u : units) cells += u.num_cells;
  EXPECT_EQ(cells, 12 - 2);
}

TEST(SweepUnits, RowsSurviveEncodingBitForBit) {
  ResultRow row;
  row.trace = "t.h5";
  row.policy = "h2o";
  row.params = "recent_ratio=0.25";
  row.budget = "0.5p";
  row.budget_tokens = 1.0 / 3.0;
  row.layer = "all";
  row.steps = 12;
  row.mass_recall = {0.1, std::numeric_limits<double>::quiet_NaN(), 0.7, 1e-300};
  row.cosine = {-0.0, 0.25, 1.0, 0.5};
  row.top_recall_mean[1] = 0.123456789012345678;
  row.resident_tokens_peak = 7;
  row.kv_bytes_mean = 12345.678;
  row.kv_bytes_peak = int64_t{1} << 40;
  const SweepUnit unit{.trace = 3, .first_cell = 5, .num_cells = 1};
  ResultRow infinite = row;
  infinite.rel_l2_error.p95 = std::numeric_limits<double>::infinity();
  const FinishedCells back = DecodeUnitRows(EncodeUnitRows(unit, {infinite, row}), "test");
  ASSERT_EQ(back.size(), 1u);
  const std::vector<ResultRow>& rows = back.at({3, 5});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(ResultTable::Fields(rows[1]), ResultTable::Fields(row));
  EXPECT_TRUE(std::isnan(rows[0].mass_recall.p5));
  EXPECT_TRUE(std::signbit(rows[0].cosine.mean));
  EXPECT_EQ(rows[0].rel_l2_error.p95, std::numeric_limits<double>::infinity());
  EXPECT_EQ(rows[0].top_recall_mean[1], row.top_recall_mean[1]);
  EXPECT_THROW(DecodeUnitRows("{\"format\": 1}", "x"), InputError);
  EXPECT_THROW(DecodeUnitRows("not json", "x"), InputError);
}

TEST(DistributedSweep, SameBytesForAnyUnitSplitAndOrder) {
  TempDir dir;
  const SweepPlan plan = TinyPlan({WriteTrace(dir, "a.h5", 1), WriteTrace(dir, "b.h5", 2)});
  const std::string want = OneShotCsv(plan, dir);
  for (const int cells_per_unit : {0, 1, 4, 15}) {
    SCOPED_TRACE(cells_per_unit);
    const auto out = dir.path() / fmt::format("split{}", cells_per_unit);
    LocalExecutor local;
    const DistributedSweepReport report =
        RunDistributedSweep(plan, Options(out, cells_per_unit), local);
    EXPECT_TRUE(report.wrote_outputs);
    EXPECT_EQ(report.cells_total, 2 * 15);
    EXPECT_EQ(ReadFileToString(out / "sweep.csv"), want);
  }
  const auto out = dir.path() / "reversed";
  ReversingExecutor reversing;
  const DistributedSweepReport report = RunDistributedSweep(plan, Options(out, 2), reversing);
  EXPECT_EQ(report.units_run, 2 * 8);  // 15 cells in units of 2: 8 per trace
  EXPECT_EQ(ReadFileToString(out / "sweep.csv"), want);
  const nlohmann::json meta = nlohmann::json::parse(ReadFileToString(out / "sweep.json"));
  EXPECT_EQ(meta.at("ranks"), 2);
  EXPECT_EQ(meta.at("cells_resumed"), 0);
}

TEST(DistributedSweep, ResumesFromTheJournalAndRefusesOtherInputs) {
  TempDir dir;
  const std::string a = WriteTrace(dir, "a.h5", 1);
  const SweepPlan plan = TinyPlan({a, WriteTrace(dir, "b.h5", 2)});
  const std::string want = OneShotCsv(plan, dir);
  const auto out = dir.path() / "out";
  LocalExecutor local;
  RunDistributedSweep(plan, Options(out, 4), local);

  // An interrupted run: drop two unit files (as if killed before they finished), re-run.
  int units = 0;
  for (const auto& e : std::filesystem::directory_iterator(out / "sweep.journal")) {
    units += e.path().filename().string().starts_with("unit-") ? 1 : 0;
  }
  ASSERT_EQ(units, 8);  // 15 cells in units of 4: 4 per trace
  ASSERT_TRUE(std::filesystem::remove(out / "sweep.journal" / "unit-t0-c4-n4.json"));
  ASSERT_TRUE(std::filesystem::remove(out / "sweep.journal" / "unit-t1-c12-n3.json"));
  std::filesystem::remove(out / "sweep.csv");
  const DistributedSweepReport resumed = RunDistributedSweep(plan, Options(out, 4), local);
  EXPECT_EQ(resumed.units_run, 2);
  EXPECT_EQ(resumed.cells_resumed, 30 - 4 - 3);
  EXPECT_EQ(ReadFileToString(out / "sweep.csv"), want);
  // Everything finished: nothing runs, same bytes.
  const DistributedSweepReport again = RunDistributedSweep(plan, Options(out, 0), local);
  EXPECT_EQ(again.units_run, 0);
  EXPECT_EQ(ReadFileToString(out / "sweep.csv"), want);

  SweepPlan other = plan;
  other.budgets.pop_back();
  try {
    RunDistributedSweep(other, Options(out, 0), local);
    ADD_FAILURE() << "a journal of other cells was accepted";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("refusing to mix results"));
    EXPECT_THAT(e.what(), HasSubstr("'cells'"));
  }
  traces::WriteTrace(a, sim::RandomTrace(TinyShape(), 24, 37, 1));  // a.h5 changed
  try {
    RunDistributedSweep(plan, Options(out, 0), local);
    ADD_FAILURE() << "a changed trace was accepted";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("a.h5' changed"));
  }
}

TEST(DistributedSweep, CorruptTraceFailsNamingItOrIsSkippedWithKeepGoing) {
  TempDir dir;
  const std::string good = WriteTrace(dir, "a.h5", 1);
  const std::string bad = dir.File("b.h5");
  { std::ofstream(bad) << "not an HDF5 trace"; }
  const SweepPlan plan = TinyPlan({good, bad});
  LocalExecutor local;
  const auto out = dir.path() / "out";
  try {
    RunDistributedSweep(plan, Options(out, 0), local);
    ADD_FAILURE() << "a corrupt trace was accepted";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("b.h5"));
  }
  EXPECT_FALSE(std::filesystem::exists(out / "sweep.csv"));
  EXPECT_FALSE(std::filesystem::exists(out / "sweep.json"));

  DistributedSweepOptions options = Options(out, 0);
  options.keep_going = true;
  EXPECT_THROW(RunDistributedSweep(plan, options, local), InputError);
  const nlohmann::json meta = nlohmann::json::parse(ReadFileToString(out / "sweep.json"));
  ASSERT_EQ(meta.at("failures").size(), 1u);
  EXPECT_THAT(meta.at("failures")[0].at("unit").get<std::string>(), HasSubstr("b.h5 cells 0-14"));
  const std::string want = OneShotCsv(TinyPlan({good}), dir);
  EXPECT_EQ(ReadFileToString(out / "sweep.csv"), want);  // a.h5's rows, nothing of b.h5

  // The trace is repaired: its units run, a.h5's come from the journal.
  WriteTrace(dir, "b.h5", 2);
  const DistributedSweepReport report = RunDistributedSweep(plan, Options(out, 0), local);
  EXPECT_EQ(report.cells_resumed, 15);
  EXPECT_EQ(ReadFileToString(out / "sweep.csv"), OneShotCsv(plan, dir));
}

TEST(DistributedSweep, ExpandsGlobsAndListFiles) {
  TempDir dir;
  const std::string b = WriteTrace(dir, "b.h5", 2);
  const std::string a = WriteTrace(dir, "a.h5", 1);
  {  // a sidecar is HDF5: its signature, then anything
    std::ofstream(dir.File("a.h5.stats.h5"), std::ios::binary) << "\x89HDF\r\n\x1a\nsidecar";
  }
  EXPECT_EQ(ExpandTraceArguments({dir.File("*.h5")}), (std::vector<std::string>{a, b}));
  std::filesystem::create_directory(dir.path() / "lists");
  {
    std::ofstream list(dir.path() / "lists" / "traces.txt");
    list << "# the study\n../b.h5\n\n  " << a << "  \n../[a]*.h5\n";
  }
  const std::vector<std::string> listed =
      ExpandTraceArguments({(dir.path() / "lists" / "traces.txt").string()});
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_TRUE(std::filesystem::equivalent(listed[0], b));
  EXPECT_EQ(listed[1], a);
  EXPECT_TRUE(std::filesystem::equivalent(listed[2], a));
  EXPECT_EQ(ExpandTraceArguments({a}), std::vector<std::string>{a});
  // As a shell expands dir/*.h5: the sidecar goes, a lone sidecar stays (and fails as a trace).
  EXPECT_EQ(ExpandTraceArguments({a, a + ".stats.h5", b}), (std::vector<std::string>{a, b}));
  EXPECT_EQ(ExpandTraceArguments({a + ".stats.h5"}), std::vector<std::string>{a + ".stats.h5"});
  EXPECT_THROW(ExpandTraceArguments({dir.File("*.nothing")}), InputError);
  { std::ofstream(dir.File("empty.txt")) << "# nothing\n"; }
  EXPECT_THROW(ExpandTraceArguments({dir.File("empty.txt")}), InputError);
}

}  // namespace
}  // namespace kvsim::analysis
