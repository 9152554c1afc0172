#include "analysis/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/test_util.h"

namespace kvsim::analysis {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kSweepHeader =
    "trace,policy,params,budget,budget_tokens,regime,layer,steps,mass_recall_mean,mass_recall_p5,"
    "mass_recall_p50,mass_recall_p95,rel_l2_error_mean,rel_l2_error_p5,rel_l2_error_p50,"
    "rel_l2_error_p95,cosine_mean,cosine_p5,cosine_p50,cosine_p95,top1_recall_mean,"
    "top8_recall_mean,top32_recall_mean,resident_tokens_mean,resident_tokens_peak,kv_bytes_mean,"
    "kv_bytes_peak\n";

// Two traces, so each summary cell is the mean of two rows: (0.5 + 0.7) / 2 = 0.600.
constexpr const char* kSweepRows =
    "a.h5,h2o,,64,64,bounded,all,9,0.5,,,,0.25,,,,,,,,,0.4,,,,,\n"
    "b.h5,h2o,,64,64,bounded,all,9,0.7,,,,0.15,,,,,,,,,0.6,,,,,\n"
    "a.h5,h2o,,256,256,bounded,all,9,0.9,,,,0.05,,,,,,,,,0.8,,,,,\n"
    "b.h5,h2o,,256,256,bounded,all,9,0.8,,,,0.1,,,,,,,,,0.9,,,,,\n"
    "a.h5,h2o,,64,64,bounded,0,9,0.123456,,,,0.25,,,,,,,,,,,,,,\n"
    "a.h5,full,,64,64,bounded,all,9,1,,,,0,,,,,,,,,1,,,,,\n"
    "b.h5,full,,64,64,bounded,all,9,1,,,,0,,,,,,,,,1,,,,,\n";

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

void WriteResults(const std::filesystem::path& dir) {
  WriteFileAtomically(dir / "sweep.csv", std::string(kSweepHeader) + kSweepRows);
  WriteFileAtomically(dir / "sweep.json",
                      R"({"kvsim_version": "0.1.0", "traces": ["a.h5", "b.h5"],
                          "policies": ["full", "h2o"], "budgets": ["64", "256"],
                          "regime": "bounded", "seed": 7, "threads": 2,
                          "wall_seconds": 1.5, "command": "kvsim sweep <plan>"})");
  WriteFileAtomically(dir / "recurrence.csv", "layer,interval,count\n0,1,4\n0,3,2\n");
}

TEST(Report, IsOneSelfContainedPageWithTablesFiguresAndMetadata) {
  testing::TempDir dir;
  WriteResults(dir.path());
  const auto inputs = CollectReportInputs({dir.path().string()});
  EXPECT_EQ(inputs.csvs.size(), 2u);
  ASSERT_EQ(inputs.metadata_jsons.size(), 1u);
  const auto out = dir.path() / "report.html";
  WriteReport(inputs, out);
  const std::string html = ReadFileToString(out);

  // Metadata, HTML-escaped.
  EXPECT_THAT(html, HasSubstr("<tr><th>seed</th><td>7</td></tr>"));
  EXPECT_THAT(html, HasSubstr("<tr><th>traces</th><td>a.h5, b.h5</td></tr>"));
  EXPECT_THAT(html, HasSubstr("kvsim sweep &lt;plan&gt;"));
  // Summary: mass recall mean over traces, per budget.
  EXPECT_THAT(html, HasSubstr("<tr><th>h2o</th><td>0.600</td><td>0.850</td></tr>"));
  EXPECT_THAT(html, HasSubstr("<tr><th>h2o</th><td>0.200</td><td>0.075</td></tr>"));
  EXPECT_THAT(html, Not(HasSubstr("0.123")));  // layer 0 rows are not in the summary

  // Every figure embedded as a PNG data URI; nothing refers outside the page.
  // (std::regex recurses per character and overflows the stack on a base64 image: count by hand.)
  auto count_of = [&](const std::string& needle) {
    int n = 0;
    for (auto at = html.find(needle); at != std::string::npos; at = html.find(needle, at + 1)) ++n;
    return n;
  };
  const int count = count_of("src=\"data:image/png;base64,iVBORw0KGgo");  // base64 of a PNG header
  EXPECT_EQ(count_of("<img "), count);
  EXPECT_EQ(count_of("src="), count);
  EXPECT_EQ(count, 5);  // recall, error, top-k (top-8 only), per-layer (layer 0), recurrence
  EXPECT_THAT(html, Not(HasSubstr("src=\"http")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  // No staging debris beside the page.
  for (const auto& name : dir.Entries()) EXPECT_THAT(name, Not(HasSubstr(".tmp")));
}

TEST(Report, NamesTheCellsWhoseVictimsTiesDecided) {
  testing::TempDir dir;
  const std::string header = std::string(kSweepHeader, std::string(kSweepHeader).size() - 1) +
                             ",mass_recall_worst_layer_mean,worst_layer,ranked_victims,tie_share\n";
  WriteFileAtomically(dir.path() / "sweep.csv",
                      header +
                          "a.h5,snapkv,,64,64,bounded,all,9,0.5,,,,0.2,,,,,,,,,0.4,,,,,,0.5,0,"
                          "200,0.125\n"
                          "a.h5,h2o,,64,64,bounded,all,9,0.6,,,,0.2,,,,,,,,,0.4,,,,,,0.6,0,"
                          "200,0.005\n");
  const auto out = dir.path() / "report.html";
  WriteReport(CollectReportInputs({dir.path().string()}), out);
  const std::string html = ReadFileToString(out);
  EXPECT_THAT(html, HasSubstr("Cells decided by ties"));
  EXPECT_THAT(html, HasSubstr("<td>snapkv</td><td></td><td>64</td><td>12.5%</td>"));
  EXPECT_THAT(html, Not(HasSubstr("<td>h2o</td><td></td><td>64</td>")));  // 0.5% is below 1%
}

// kvsim validate's output: the overall rows as a proxy x target table, the figure embedded,
// per-budget rows left to the figure.
TEST(Report, ShowsTheValidityStudy) {
  testing::TempDir dir;
  WriteFileAtomically(dir.path() / "validate_spearman.csv",
                      "proxy,target,group,cells,rho,oriented_rho,ci_low,ci_high\n"
                      "mass_recall,kl,all,600,-0.851,0.851,0.841,0.862\n"
                      "mass_recall,free_agreement,all,600,0.676,0.676,0.64,0.72\n"
                      "mass_recall,kl,budget=4,120,-0.773,0.773,0.716,0.811\n"
                      "cosine,kl,all,600,-0.971,0.971,0.966,0.976\n"
                      "cosine,free_agreement,all,600,,,,\n");
  const auto out = dir.path() / "report.html";
  WriteReport(CollectReportInputs({dir.path().string()}), out);
  const std::string html = ReadFileToString(out);
  EXPECT_THAT(html, HasSubstr("<tr><th>proxy \\ target</th><th>kl</th><th>free_agreement</th>"));
  EXPECT_THAT(html, HasSubstr("<tr><th>mass_recall</th><td>0.851 [0.84, 0.86]</td>"
                              "<td>0.676 [0.64, 0.72]</td></tr>"));
  EXPECT_THAT(html, HasSubstr("<tr><th>cosine</th><td>0.971 [0.97, 0.98]</td><td></td></tr>"));
  EXPECT_THAT(html, Not(HasSubstr("0.773")));  // per-budget rows are in the figure only
  EXPECT_THAT(html, HasSubstr("data:image/png;base64,"));
}

TEST(Report, SameInputsGiveTheSamePage) {
  testing::TempDir dir;
  WriteResults(dir.path());
  const auto inputs = CollectReportInputs({(dir.path() / "sweep.csv").string()});
  EXPECT_EQ(inputs.metadata_jsons.size(), 1u);  // sweep.json beside sweep.csv
  WriteReport(inputs, dir.path() / "a.html");
  WriteReport(inputs, dir.path() / "b.html");
  EXPECT_EQ(ReadFileToString(dir.path() / "a.html"), ReadFileToString(dir.path() / "b.html"));
}

TEST(Report, BadInputLeavesNoPage) {
  testing::TempDir dir;
  WriteResults(dir.path());
  WriteFileAtomically(dir.path() / "memory.csv",
                      "step,phase,category,layer,bytes\n0,warmup,x,0,1\n");
  const auto out = dir.path() / "report.html";
  EXPECT_THAT(ErrorOf([&] { WriteReport(CollectReportInputs({dir.path().string()}), out); }),
              HasSubstr("memory.csv:2: column 'phase': 'warmup'"));
  EXPECT_FALSE(std::filesystem::exists(out));

  WriteFileAtomically(dir.path() / "memory.csv", "step,phase,category,layer,bytes\n");
  WriteFileAtomically(dir.path() / "sweep.json", "{not json");
  EXPECT_THAT(ErrorOf([&] {
                WriteReport(CollectReportInputs({(dir.path() / "sweep.csv").string()}), out);
              }),
              HasSubstr("sweep.json: not valid JSON"));
  EXPECT_FALSE(std::filesystem::exists(out));

  testing::TempDir empty;
  EXPECT_THAT(ErrorOf([&] { CollectReportInputs({empty.path().string()}); }),
              HasSubstr("no result CSV found"));
  EXPECT_THAT(ErrorOf([&] { CollectReportInputs({"/nonexistent/results"}); }),
              HasSubstr("/nonexistent/results: no such file or directory"));
}

}  // namespace
}  // namespace kvsim::analysis
