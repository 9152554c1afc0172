// Runs the libCacheSim commands of sim/paging/README.md ("Byte-identical to traceConv") on a
// kvsim export, when `cachesim` / `traceConv` are on PATH (skipped otherwise): cachesim's miss
// ratios equal kvsim's classic counts, and traceConv converts the csv to the very bytes kvsim's
// oracleGeneral writer produced. The commands are read from the README, so it cannot go stale.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include "common/atomic_file.h"
#include "sim/paging/experiment.h"
#include "sim/paging/registry.h"
#include "sim/paging/request_sequence.h"
#include "tests/common/test_util.h"

namespace kvsim::paging {
namespace {

using kvsim::testing::RunCommand;
using kvsim::testing::TempDir;

bool OnPath(const std::string& tool) {
  return RunCommand("command -v " + tool + " >/dev/null 2>&1").exit_code == 0;
}

// The README lines that start with `prefix` (inside its code blocks).
std::vector<std::string> ReadmeCommands(const std::string& prefix) {
  std::istringstream in(ReadFileToString(std::string(KVSIM_SOURCE_DIR) + "/sim/paging/README.md"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) lines.push_back(line);
  }
  return lines;
}

// 4000 requests, one per step: a hot set of 60 pages and a tail of 400.
RequestSequence Workload() {
  std::mt19937_64 rng(11);
  RequestSequence seq;
  seq.stream = "r";
  seq.page_bytes = 640;
  for (int64_t t = 0; t < 4000; ++t) {
    const uint64_t page = rng() % 3 == 0 ? 1000 + rng() % 400 : rng() % 60;
    seq.AddStep(t, std::span<const uint64_t>(&page, 1));
  }
  return seq;
}

int64_t ClassicFaults(const RequestSequence& seq, const std::string& policy, int64_t size) {
  const DenseRequests dense = OneRequestPerStep(Densify(seq));
  auto p = MakePagingPolicy(CanonicalPagingPolicyName(policy));
  return Replay(dense, *p, {.cache_size = size, .mode = Mode::kOffload, .seed = 1, .bits = {}})
      .faults;
}

TEST(LibCacheSimCommands, CachesimCountsEqualKvsimClassic) {
  if (!OnPath("cachesim")) GTEST_SKIP() << "cachesim (libCacheSim) is not on PATH";
  const auto commands = ReadmeCommands("cachesim ");
  ASSERT_EQ(commands.size(), 2u) << "sim/paging/README.md lost its cachesim commands";
  TempDir dir;
  const RequestSequence seq = Workload();
  WriteLibCacheSimCsv(dir.File("r.csv"), seq);
  WriteOracleGeneral(dir.File("r.oracleGeneral.bin"), seq);
  const std::regex row(R"((\S+) cache size\s+(\d+), (\d+) req, miss ratio ([0-9.]+))");
  int rows = 0;
  for (const std::string& command : commands) {
    const auto r =
        RunCommand("cd " + kvsim::testing::ShellQuote(dir.path().string()) + " && " + command);
    ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.err;
    std::istringstream out(r.out);
    for (std::string line; std::getline(out, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, row)) continue;
      ++rows;
      const int64_t size = std::stoll(m[2]);
      EXPECT_EQ(std::stoll(m[3]), seq.requests()) << line;
      const int64_t faults = ClassicFaults(seq, m[1], size);
      EXPECT_EQ(fmt::format("{:.4f}", static_cast<double>(faults) / 4000.0), m[4].str())
          << command << "\n"
          << line << "\nkvsim faults " << faults;
    }
  }
  EXPECT_EQ(rows, 3 + 2);  // 3 policies at one size on the csv, Belady at 2 sizes
}

TEST(LibCacheSimCommands, TraceConvWritesKvsimsOracleGeneralBytes) {
  if (!OnPath("traceConv")) GTEST_SKIP() << "traceConv (libCacheSim) is not on PATH";
  const auto commands = ReadmeCommands("traceConv ");
  ASSERT_EQ(commands.size(), 1u) << "sim/paging/README.md lost its traceConv command";
  TempDir dir;
  const RequestSequence seq = Workload();
  WriteLibCacheSimCsv(dir.File("r.csv"), seq);
  WriteOracleGeneral(dir.File("r.oracleGeneral.bin"), seq);
  const auto r =
      RunCommand("cd " + kvsim::testing::ShellQuote(dir.path().string()) + " && " + commands[0]);
  ASSERT_EQ(r.exit_code, 0) << commands[0] << "\n" << r.err;
  const std::string theirs = ReadFileToString(dir.File("r.traceConv.oracleGeneral"));
  const std::string ours = ReadFileToString(dir.File("r.oracleGeneral.bin"));
  ASSERT_EQ(theirs.size(), ours.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    ASSERT_EQ(theirs[i], ours[i]) << "first difference at byte " << i << " (record "
                                  << i / kOracleRecordBytes << ", field byte "
                                  << i % kOracleRecordBytes << ")";
  }
}

}  // namespace
}  // namespace kvsim::paging
