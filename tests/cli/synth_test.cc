// `kvsim synth`: help, argument errors (exit non-zero, message naming the argument, no file
// left behind) and a round trip through ReadTrace.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <string>

#include "common/test_util.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

using ::kvsim::testing::RunKvsim;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(SynthCli, HelpListsScenariosAndShapes) {
  const auto r = RunKvsim("synth --help");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("--scenario"));
  EXPECT_THAT(r.out, HasSubstr("multi-turn"));
  EXPECT_THAT(r.out, HasSubstr("llama-3-8b"));
}

TEST(SynthCli, WritesATraceReadableByReadTrace) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  const auto r = RunKvsim(
      "synth --shape stories260k --layers 2 --prompt 120 --decode 16 --scenario multi-turn "
      "--topics 2 --turns 4 --seed 3 --dtype float32 -o " +
      ShellQuote(path));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Trace trace = ReadTrace(path);
  EXPECT_EQ(trace.num_layers(), 2);
  EXPECT_EQ(trace.shape().name, "stories260k");
  EXPECT_EQ(trace.meta().prompt_len, 120);
  EXPECT_EQ(trace.meta().total_len, 136);
  EXPECT_EQ(trace.meta().storage, StorageType::kFloat32);
  EXPECT_EQ(trace.meta().segments.size(), 6u);  // 4 turns, question, answer
  EXPECT_THAT(trace.meta().source, HasSubstr("synthetic:multi-turn seed=3"));
  EXPECT_THAT(trace.meta().source, HasSubstr("question_topic="));
}

TEST(SynthCli, SameSeedWritesTheSameTrace) {
  TempDir dir;
  const std::string args = "synth --shape stories260k --layers 1 --prompt 80 --decode 8 --seed 5 ";
  ASSERT_EQ(RunKvsim(args + "-o " + ShellQuote(dir.File("a.h5"))).exit_code, 0);
  ASSERT_EQ(RunKvsim(args + "-o " + ShellQuote(dir.File("b.h5"))).exit_code, 0);
  const Trace a = ReadTrace(dir.File("a.h5"));
  const Trace b = ReadTrace(dir.File("b.h5"));
  EXPECT_EQ(a.meta(), b.meta());
  EXPECT_EQ(a.layer(0), b.layer(0));
}

struct BadArgs {
  std::string args;
  std::string names;  // the argument the message must name
};

class SynthCliBadArgs : public ::testing::TestWithParam<BadArgs> {};

TEST_P(SynthCliBadArgs, ExitsNonZeroNamingTheArgumentAndWritesNothing) {
  TempDir dir;
  const auto r = RunKvsim("synth " + GetParam().args + " -o " + ShellQuote(dir.File("t.h5")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr(GetParam().names));
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(
    Args,
    SynthCliBadArgs,
    ::testing::Values(BadArgs{"--shape llama-9 --prompt 64", "--shape"},
                      BadArgs{"--shape stories260k --prompt 64 --scenario bogus", "--scenario"},
                      BadArgs{"--shape stories260k --prompt 0", "--prompt"},
                      BadArgs{"--shape stories260k --prompt 64 --decode -3", "--decode"},
                      BadArgs{"--shape stories260k --layers 9 --prompt 64", "--layers"},
                      BadArgs{"--shape stories260k --prompt 64 --dtype int8", "--dtype"},
                      BadArgs{"--shape stories260k --prompt 64 --heavy-hitters 500",
                              "--heavy-hitters"}),
    // Name each case after the argument it breaks ("shape", "heavy_hitters", ...).
    [](const ::testing::TestParamInfo<BadArgs>& param_info) {
      std::string name;
      for (char c : param_info.param.names) {
        if (std::isalnum(static_cast<unsigned char>(c))) name += c;
        if (c == '-' && !name.empty()) name += '_';
      }
      return name;
    });

TEST(SynthCli, UnwritableOutputDirectoryFailsNamingTheOutput) {
  TempDir dir;
  const std::string path = dir.File("missing/t.h5");
  const auto r = RunKvsim("synth --shape stories260k --prompt 64 -o " + ShellQuote(path));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--output"));
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

}  // namespace
}  // namespace kvsim::traces
