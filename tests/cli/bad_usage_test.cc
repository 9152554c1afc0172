// Bad usage ends in a clear error and exit 2, never a crash, a wrapped value or a destroyed input
// (issue 15): CLI parse errors, out-of-range --threads and --seed, an output path that is an
// input, and the smallest D2O budgets.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/atomic_file.h"
#include "common/test_util.h"
#include "common/tiny_shape.h"
#include "sim/random_trace.h"
#include "traces/trace_io.h"

namespace kvsim {
namespace {

using ::testing::HasSubstr;
using testing::RunKvsim;
using testing::ShellQuote;
using testing::TempDir;

std::string WriteTinyTrace(const TempDir& dir) {
  const std::string path = dir.File("t.h5");
  traces::WriteTrace(path, sim::RandomTrace(testing::TinyShape(), 24, 32, 5));
  return path;
}

TEST(BadUsage, ParseErrorsExitTwoAndHelpExitsZero) {
  const auto unknown = RunKvsim("replay --no-such-flag");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  const auto missing = RunKvsim("replay --policy h2o");
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
  EXPECT_THAT(missing.err, HasSubstr("--trace"));
  const auto help = RunKvsim("replay --help");
  EXPECT_EQ(help.exit_code, 0) << help.err;
}

TEST(BadUsage, ThreadsAndSeedsOutOfRangeAreRefused) {
  TempDir dir;
  const std::string trace = ShellQuote(WriteTinyTrace(dir));
  for (const std::string& args :
       {"replay --trace " + trace + " --policy h2o --budget 8 --threads 2147483647",
        "replay --trace " + trace + " --policy h2o --budget 8 --threads -1",
        "replay --trace " + trace + " --policy random --budget 8 --seed -1",
        "sweep --trace " + trace + " --policy h2o --budget 8 --threads 100000 --out " +
            ShellQuote(dir.path().string()),
        "sweep --trace " + trace + " --policy h2o --budget 8 --seed -5 --out " +
            ShellQuote(dir.path().string())}) {
    SCOPED_TRACE(args);
    const auto r = RunKvsim(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, ::testing::AnyOf(HasSubstr("--threads"), HasSubstr("--seed"))) << r.err;
  }
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"t.h5"});  // no journal, no output
}

TEST(BadUsage, OutputThatIsAnInputIsRefusedAndTheInputSurvives) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const std::string before = ReadFileToString(trace);
  std::filesystem::create_directory(dir.path() / "sub");
  const std::string other_spelling = (dir.path() / "sub" / ".." / "t.h5").string();
  for (const std::string& args :
       {"inspect " + ShellQuote(trace) + " -o " + ShellQuote(trace),
        "replay --trace " + ShellQuote(trace) + " --policy h2o --budget 8 --csv " +
            ShellQuote(other_spelling),
        "requests " + ShellQuote(trace) + " -o " + ShellQuote(trace)}) {
    SCOPED_TRACE(args);
    const auto r = RunKvsim(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("also an input")) << r.err;
  }
  EXPECT_EQ(ReadFileToString(trace), before);
}

TEST(BadUsage, D2oAtTheSmallestBudgetsReplaysEveryTiming) {
  TempDir dir;
  const std::string trace = ShellQuote(WriteTinyTrace(dir));
  for (const char* budget : {"1", "2"}) {
    for (const char* evict : {"before-attend", "after-attend"}) {
      for (const char* gqa : {"query-head", "kv-head"}) {
        const std::string args =
            fmt::format("replay --trace {} --policy d2o --budget {} --evict {} --gqa {}", trace,
                        budget, evict, gqa);
        SCOPED_TRACE(args);
        const auto r = RunKvsim(args);
        EXPECT_EQ(r.exit_code, 0) << r.err;
      }
    }
  }
}

TEST(BadUsage, PagingWithoutDecodeStepsSaysSo) {
  TempDir dir;
  const std::string trace = dir.File("prompt_only.h5");
  traces::WriteTrace(trace, sim::RandomTrace(testing::TinyShape(), 24, 24, 5));
  std::filesystem::create_directory(dir.path() / "out");
  const auto r = RunKvsim("paging " + ShellQuote(trace) + " -o " + ShellQuote(dir.File("out")));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("no page requests")) << r.err;
}

// Interrupted at several moments while writing its trace, `synth` never leaves OUT.tmp.<pid>.
TEST(BadUsage, InterruptedWriterLeavesNoTemporaryFile) {
  TempDir dir;
  for (const char* delay : {"0.05", "0.2", "0.5", "1"}) {
    for (const char* signal : {"INT", "TERM"}) {
      const auto r = testing::RunCommand(fmt::format(
          "timeout -s {} {} {} synth --shape llama-3-8b --layers 2 --prompt 4096 --decode 512 "
          "--no-stats -o {}",
          signal, delay, KVSIM_BINARY, ShellQuote(dir.File("big.h5"))));
      for (const std::string& name : dir.Entries()) {
        EXPECT_THAT(name, ::testing::Not(HasSubstr(".tmp."))) << signal << " after " << delay;
      }
      std::filesystem::remove(dir.File("big.h5"));
    }
  }
}

}  // namespace
}  // namespace kvsim
