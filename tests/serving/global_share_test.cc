// share = "global": the row allocation by value (hand-worked and against a brute-force
// optimum) and its names in the scenario file and on the command line.
#include "sim/serving/global_share.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <random>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/test_util.h"
#include "common/tiny_shape.h"
#include "serving/global_share_test_util.h"
#include "sim/random_trace.h"
#include "sim/serving/live_scores.h"
#include "sim/serving/scenario.h"
#include "sim/serving/scheduler.h"
#include "traces/trace_io.h"

namespace kvsim::serving {
namespace {

using kvsim::testing::TempDir;

TEST(GlobalShare, FlatCurveTakesTheRowsAConcentratedOneDoesNotNeed) {
  RowClaim a{.fixed_rows = -1, .min_rows = 1, .max_rows = 8, .value = {0.7, 0.1, 0.1, 0.05, 0.05}};
  RowClaim b{.fixed_rows = -1, .min_rows = 1, .max_rows = 8, .value = std::vector(20, 0.05)};
  const std::vector<RowClaim> claims = {a, b};
  EXPECT_EQ(AllocateRowsByValue(8, 4, claims), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(BruteForce(8, 4, claims), (std::vector<int64_t>{2, 6}));
  // A claim without a score takes its fixed share; the rest as before.
  const std::vector<RowClaim> three = {a, {.fixed_rows = 3}, b};
  EXPECT_EQ(AllocateRowsByValue(11, 4, three), (std::vector<int64_t>{2, 3, 6}));
  // Rows nobody values are spread level by level (the lower index first at a tie), up to each
  // maximum: from {2, 6}, A takes 4 to reach 6, then A and B one each.
  EXPECT_EQ(AllocateRowsByValue(14, 4, claims), (std::vector<int64_t>{7, 7}));
  EXPECT_EQ(BruteForce(14, 4, claims), (std::vector<int64_t>{7, 7}));
  EXPECT_EQ(AllocateRowsByValue(13, 4, claims), (std::vector<int64_t>{7, 6}));
  EXPECT_EQ(AllocateRowsByValue(20, 4, claims), (std::vector<int64_t>{8, 8}));
}

TEST(GlobalShare, AllocationIsTheBruteForceOptimum) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t b = 1 + static_cast<int64_t>(rng() % 4);
    std::vector<RowClaim> claims(1 + rng() % 3);
    int64_t floor = 0;
    for (RowClaim& c : claims) {
      if (rng() % 4 == 0) {
        c.fixed_rows = static_cast<int64_t>(rng() % 3);
        floor += c.fixed_rows;
        continue;
      }
      c.max_rows = static_cast<int64_t>(rng() % 6);
      c.min_rows = 1 + static_cast<int64_t>(rng() % 2);  // the scheduler's minimum is >= 1
      floor += std::min(c.min_rows, c.max_rows);
      std::vector<double> v(rng() % 16);
      for (double& x : v) x = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
      std::sort(v.begin(), v.end(), std::greater<>());
      c.value = v;
    }
    const int64_t capacity = floor + static_cast<int64_t>(rng() % 10);
    const std::vector<int64_t> rows = AllocateRowsByValue(capacity, b, claims);
    EXPECT_EQ(rows, BruteForce(capacity, b, claims)) << "trial " << trial;
    int64_t total = 0;
    for (const int64_t r : rows) total += r;
    EXPECT_LE(total, capacity);
  }
}

std::string WriteTrace(
    const TempDir& dir, const std::string& name, int64_t total, uint64_t seed, double scale) {
  const std::string path = dir.File(name);
  traces::WriteTrace(path, sim::RandomTrace(kvsim::testing::TinyShape(), 24, total, seed, scale));
  return path;
}

// The live replays hold whole traces; traces that cannot fit are refused before any reading,
// naming the trace and the sizes. TinyShape at T = 40: 2 layers x (4 + 2 x 2) heads x 8 x 40
// floats = 20,480 bytes.
TEST(GlobalShare, TracesThatCannotFitInMemoryAreRefused) {
  traces::TraceMeta meta;
  meta.shape = kvsim::testing::TinyShape();
  meta.prompt_len = 24;
  meta.total_len = 40;
  EXPECT_NO_THROW(CheckTracesFitInMemory({"a.h5"}, {meta}, 20480));
  try {
    CheckTracesFitInMemory({"a.h5", "b.h5"}, {meta, meta}, 40959);
    FAIL() << "two traces of 20,480 bytes fit in 40,959";
  } catch (const InputError& e) {
    for (const char* needle : {"a.h5", "share = global", "equal"}) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

TEST(GlobalShare, ParsedFromTheScenarioAndTheFlag) {
  TempDir dir;
  const std::string trace = WriteTrace(dir, "a.h5", 40, 5, 2.0);
  const std::string head = "traces = [\"a.h5\"]\n[pool]\ncapacity = 65536\non_full = \"evict\"\n";
  std::ofstream(dir.File("s.toml")) << head << "share = \"global\"\n";
  EXPECT_EQ(ReadScenarioFile(dir.File("s.toml")).scheduler.share, BudgetShare::kGlobal);
  std::ofstream(dir.File("bad.toml")) << head << "share = \"scores\"\n";
  try {
    (void)ReadScenarioFile(dir.File("bad.toml"));
    FAIL() << "share = scores accepted";
  } catch (const InputError& e) {
    for (const char* needle : {"bad.toml", "[pool].share", "global"}) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
  const std::string cli = "serve --trace " + kvsim::testing::ShellQuote(trace) +
                          " --policy h2o --budget 8 --rate 100 --capacity 64KiB --on-full evict "
                          "--requests 4 --threads 1 --share ";
  const auto ok =
      kvsim::testing::RunKvsim(cli + "global -o " + kvsim::testing::ShellQuote(dir.File("out")));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ReadFileToString(dir.path() / "out" / "serve.json").find("\"global\""),
            std::string::npos);
  const auto bad =
      kvsim::testing::RunKvsim(cli + "scores -o " + kvsim::testing::ShellQuote(dir.File("out2")));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--share"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kvsim::serving
