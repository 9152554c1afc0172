// `kvsim plot` and `kvsim report` end to end through the CLI binary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/atomic_file.h"
#include "common/test_util.h"

namespace kvsim::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr const char* kMrc =
    "stream,mode,policy,cache_size,requests,faults,miss_ratio,opt_faults,competitive_ratio,"
    "fetched_bytes\n"
    "merged,offload,lru,4,100,40,0.4,20,2,4096\n"
    "merged,offload,lru,8,100,25,0.25,10,2.5,4096\n";

TEST(PlotCli, WritesAndListsPngSvgAndData) {
  TempDir dir;
  WriteFileAtomically(dir.path() / "paging_mrc.csv", kMrc);
  const auto out = dir.path() / "figs";
  const CommandResult r = RunKvsim("plot " + ShellQuote(dir.File("paging_mrc.csv")) + " -o " +
                                   ShellQuote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"paging_mrc.png", "paging_mrc.svg", "paging_mrc.dat"}) {
    EXPECT_THAT(r.out, HasSubstr((out / name).string()));
    EXPECT_GT(std::filesystem::file_size(out / name), 0u) << name;
  }
}

TEST(PlotCli, ForcedKindMustMatchTheSchema) {
  TempDir dir;
  WriteFileAtomically(dir.path() / "results.csv", kMrc);
  const CommandResult r = RunKvsim("plot --kind memory " + ShellQuote(dir.File("results.csv")) +
                                   " -o " + ShellQuote(dir.File("figs")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("results.csv: missing column 'step'"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "figs"));
}

TEST(PlotCli, MissingOrMalformedCsvGivesClearErrorAndNoImage) {
  TempDir dir;
  const auto out = dir.path() / "figs";
  CommandResult r =
      RunKvsim("plot " + ShellQuote(dir.File("nope.csv")) + " -o " + ShellQuote(out.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("kvsim: error: " + dir.File("nope.csv") + ": no such file"));

  // The first file is fine, the second is not: neither is drawn.
  WriteFileAtomically(dir.path() / "paging_mrc.csv", kMrc);
  WriteFileAtomically(dir.path() / "recurrence.csv", "layer,interval,count\n0,two,3\n");
  r = RunKvsim("plot " + ShellQuote(dir.File("paging_mrc.csv")) + " " +
               ShellQuote(dir.File("recurrence.csv")) + " -o " + ShellQuote(out.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("recurrence.csv:2: column 'interval': 'two' is not a whole number"));
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(PlotCli, MissingGnuplotNamesThePackage) {
  TempDir dir;
  WriteFileAtomically(dir.path() / "paging_mrc.csv", kMrc);
  const CommandResult r = RunCommand(
      "PATH=" + ShellQuote(dir.File("no-bin")) + " " + ShellQuote(KVSIM_BINARY) + " plot " +
      ShellQuote(dir.File("paging_mrc.csv")) + " -o " + ShellQuote(dir.File("figs")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("gnuplot not found"));
  EXPECT_THAT(r.err, HasSubstr("gnuplot-nox"));
  std::vector<std::string> images;
  if (std::filesystem::exists(dir.path() / "figs")) {
    for (const auto& e : std::filesystem::directory_iterator(dir.path() / "figs")) {
      images.push_back(e.path().string());
    }
  }
  EXPECT_THAT(images, IsEmpty());
}

TEST(ReportCli, WritesOnePage) {
  TempDir dir;
  WriteFileAtomically(dir.path() / "paging_mrc.csv", kMrc);
  const CommandResult r = RunKvsim("report " + ShellQuote(dir.path().string()) + " -o " +
                                   ShellQuote(dir.File("report.html")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string html = ReadFileToString(dir.path() / "report.html");
  EXPECT_THAT(html, HasSubstr("data:image/png;base64,"));
  EXPECT_THAT(html, HasSubstr("Miss-ratio curves (stream merged)"));
}

}  // namespace
}  // namespace kvsim::testing
