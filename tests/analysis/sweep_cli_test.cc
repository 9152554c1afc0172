// `kvsim replay` and `kvsim sweep` end to end: outputs, error messages, nothing left behind.
#include <gtest/gtest.h>

#include "analysis/csv.h"
#include "common/test_util.h"
#include "common/tiny_shape.h"
#include "sim/random_trace.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

using testing::RunKvsim;
using testing::ShellQuote;
using testing::TempDir;

std::string WriteTinyTrace(const TempDir& dir) {
  const std::string path = dir.File("tiny.h5");
  traces::WriteTrace(path, sim::RandomTrace(testing::TinyShape(), 32, 40, 3));
  return path;
}

TEST(ReplayCli, PrintsSummaryAndWritesMemoryCsv) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const auto r =
      RunKvsim("replay --trace " + ShellQuote(trace) +
               " --policy h2o --budget 0.25p --param recent_ratio=0.25 --memory-csv " +
               ShellQuote(dir.File("memory.csv")) + " --csv " + ShellQuote(dir.File("rows.csv")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("policy h2o (recent_ratio=0.25)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  all "), std::string::npos) << r.out;
  const CsvTable memory = CsvTable::Read(dir.File("memory.csv"));
  EXPECT_EQ(memory.header(),
            (std::vector<std::string>{"step", "phase", "category", "layer", "bytes"}));
  const CsvTable rows = CsvTable::Read(dir.File("rows.csv"));
  EXPECT_EQ(rows.num_rows(), 3u);
}

TEST(ReplayCli, UnknownParameterFailsNamingIt) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const auto r = RunKvsim("replay --trace " + ShellQuote(trace) +
                          " --policy streaming --budget 8 --param window=3 --csv " +
                          ShellQuote(dir.File("rows.csv")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("policy 'streaming': unknown parameter window=3: expected one of sinks"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"tiny.h5"});
}

TEST(SweepCli, WritesCsvAndJsonAtomically) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  std::filesystem::create_directory(dir.path() / "out");
  const auto r = RunKvsim("sweep --trace " + ShellQuote(trace) +
                          " --policy full --policy h2o --budget 8 --budget 0.5p --threads 2 "
                          "--param h2o:recent_ratio=0.25 --out " +
                          ShellQuote(dir.File("out")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CsvTable table = CsvTable::Read(dir.path() / "out" / "sweep.csv");
  EXPECT_EQ(table.num_rows(), 2u * 2u * 3u);
  EXPECT_EQ(table.Text(6, table.Column("params")), "recent_ratio=0.25");
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "out" / "sweep.json"));
}

TEST(SweepCli, UnknownPolicyFailsAndLeavesNoOutput) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  std::filesystem::create_directory(dir.path() / "out");
  const auto r =
      RunKvsim("sweep --trace " + ShellQuote(trace) +
               " --policy h2o --policy nope --budget 8 --out " + ShellQuote(dir.File("out")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown policy 'nope'"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() / "out"));
}

}  // namespace
}  // namespace kvsim::analysis
