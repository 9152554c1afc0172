#include "analysis/plot.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <functional>
#include <sstream>

#include "analysis/plot_paging_predictions.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/test_util.h"

namespace kvsim::analysis {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// ---- Reading back the .dat files gnuplot drew from. --------------------------------------------

struct DatSeries {
  std::string panel;
  std::string label;
  std::vector<std::vector<double>> rows;
};

std::vector<DatSeries> ReadDat(const std::filesystem::path& path) {
  std::vector<DatSeries> out;
  std::istringstream in(ReadFileToString(path));
  std::string line;
  DatSeries current;
  bool open = false;
  auto flush = [&] {
    if (open) out.push_back(current);
    current = DatSeries();
    open = false;
  };
  while (std::getline(in, line)) {
    if (line.rfind("# panel: ", 0) == 0) {
      flush();
      current.panel = line.substr(9);
    } else if (line.rfind("# series: ", 0) == 0) {
      if (current.label.size() > 0) flush();
      current.label = line.substr(10);
      open = true;
    } else if (line.empty() || line[0] == '#') {
      continue;
    } else {
      std::istringstream cells(line);
      std::vector<double> row;
      double v = 0;
      while (cells >> v) row.push_back(v);
      current.rows.push_back(row);
    }
  }
  flush();
  return out;
}

const DatSeries& Find(const std::vector<DatSeries>& all,
                      const std::string& label,
                      const std::string& panel = "") {
  for (const auto& s : all) {
    if (s.label == label && s.panel == panel) return s;
  }
  ADD_FAILURE() << "no series '" << label << "' in panel '" << panel << "'";
  static const DatSeries kNone;
  return kNone;
}

void ExpectImages(const std::filesystem::path& dir, const std::string& name) {
  for (const char* ext : {".png", ".svg", ".dat"}) {
    const auto path = dir / (name + ext);
    ASSERT_TRUE(std::filesystem::exists(path)) << path;
    EXPECT_GT(std::filesystem::file_size(path), 100u) << path;
  }
  EXPECT_EQ(ReadFileToString(dir / (name + ".png")).substr(1, 3), "PNG");
  EXPECT_THAT(ReadFileToString(dir / (name + ".svg")), HasSubstr("<svg"));
}

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// ---- A sweep.csv built from a closed-form recall, so the test knows every number. ------------

constexpr const char* kSweepHeader =
    "trace,policy,params,budget,budget_tokens,regime,layer,steps,mass_recall_mean,mass_recall_p5,"
    "mass_recall_p50,mass_recall_p95,rel_l2_error_mean,rel_l2_error_p5,rel_l2_error_p50,"
    "rel_l2_error_p95,cosine_mean,cosine_p5,cosine_p50,cosine_p95,top1_recall_mean,"
    "top8_recall_mean,top32_recall_mean,resident_tokens_mean,resident_tokens_peak,kv_bytes_mean,"
    "kv_bytes_peak";

double Recall(const std::string& trace, const std::string& policy, int budget, int layer) {
  if (policy == "full") return 1.0;
  const double base = policy == "oracle" ? 0.9 : policy == "h2o" ? 0.6 : 0.5;
  return std::min(1.0,
                  base + 0.02 * std::log2(budget) + 0.01 * layer + (trace == "b.h5" ? 0.03 : 0.0));
}

// Policies x budgets x layers {0, 1, all=-1}; top32 left empty ("does not apply") for h2o.
std::string SweepCsv(const std::vector<std::string>& traces) {
  std::string csv = std::string(kSweepHeader) + "\n";
  for (const auto& trace : traces) {
    for (std::string policy : {"full", "oracle", "h2o", "snap_kv"}) {
      for (int budget : {16, 64, 256}) {
        for (int layer : {0, 1, -1}) {
          const double r = Recall(trace, policy, budget, layer);
          const std::string top32 = policy == "h2o" ? "" : fmt::format("{}", r * r);
          csv += fmt::format(
              "{},{},,{},{},bounded,{},10,{},0,0,0,{},0,0,0,1,1,1,1,{},{},{},1,1,{},1\n", trace,
              policy, budget, budget, layer < 0 ? "all" : std::to_string(layer), r, 1 - r,
              std::sqrt(r), r, top32, 100 * budget);
        }
      }
    }
  }
  return csv;
}

CsvTable Table(const std::string& text, const std::string& name = "sweep.csv") {
  return CsvTable::Parse(text, name);
}

TEST(Plot, SweepSeriesEqualTheCsvNumbers) {
  testing::TempDir dir;
  const auto figures = PlotResults(Table(SweepCsv({"a.h5"})), ResultKind::kSweep, dir.path());
  std::vector<std::string> names;
  for (const auto& f : figures) names.push_back(f.name);
  EXPECT_THAT(names, UnorderedElementsAre("recall_vs_budget", "recall_vs_kv_bytes",
                                          "output_error_vs_budget", "topk_recall_vs_budget",
                                          "recall_by_layer"));
  for (const auto& name : names) ExpectImages(dir.path(), name);

  // Equal memory: the same recall against the kv_bytes_mean column (here 100 x the budget).
  const auto by_bytes = ReadDat(dir.path() / "recall_vs_kv_bytes.dat");
  const DatSeries& h2o_bytes = Find(by_bytes, "h2o");
  ASSERT_EQ(h2o_bytes.rows.size(), 3u);
  EXPECT_EQ(h2o_bytes.rows[2][0], 100 * 256);
  EXPECT_DOUBLE_EQ(h2o_bytes.rows[2][1], Recall("a.h5", "h2o", 256, -1));

  const auto recall = ReadDat(dir.path() / "recall_vs_budget.dat");
  ASSERT_EQ(recall.size(), 4u);
  for (auto [policy, label] : std::vector<std::pair<std::string, std::string>>{
           {"h2o", "h2o"}, {"snap_kv", "snap_kv"}, {"oracle", "oracle (upper bound)"}}) {
    const DatSeries& s = Find(recall, label);
    ASSERT_EQ(s.rows.size(), 3u) << label;
    int i = 0;
    for (int budget : {16, 64, 256}) {
      EXPECT_EQ(s.rows[i][0], budget);
      EXPECT_DOUBLE_EQ(s.rows[i][1], Recall("a.h5", policy, budget, -1)) << label;
      ++i;
    }
  }
  const DatSeries& full = Find(recall, "full cache");
  for (const auto& row : full.rows) EXPECT_EQ(row[1], 1.0);

  const auto error = ReadDat(dir.path() / "output_error_vs_budget.dat");
  EXPECT_DOUBLE_EQ(Find(error, "oracle").rows[1][1], 1 - Recall("a.h5", "oracle", 64, -1));

  const auto by_layer = ReadDat(dir.path() / "recall_by_layer.dat");
  EXPECT_EQ(by_layer.size(), 8u);  // 2 layers x 4 policies
  EXPECT_DOUBLE_EQ(Find(by_layer, "h2o", "layer 1").rows[2][1], Recall("a.h5", "h2o", 256, 1));

  const auto topk = ReadDat(dir.path() / "topk_recall_vs_budget.dat");
  const double r = Recall("a.h5", "snap_kv", 16, -1);
  EXPECT_DOUBLE_EQ(Find(topk, "snap_kv", "top-1 recall").rows[0][1], std::sqrt(r));
  EXPECT_DOUBLE_EQ(Find(topk, "snap_kv", "top-32 recall").rows[0][1], r * r);
  for (const auto& s : topk) {  // h2o's empty top-32 fields draw no line
    EXPECT_FALSE(s.label == "h2o" && s.panel == "top-32 recall");
  }
}

TEST(Plot, SweepAveragesTracesPerBudget) {
  testing::TempDir dir;
  PlotResults(Table(SweepCsv({"a.h5", "b.h5"})), ResultKind::kSweep, dir.path());
  const auto recall = ReadDat(dir.path() / "recall_vs_budget.dat");
  const double expected = (Recall("a.h5", "h2o", 64, -1) + Recall("b.h5", "h2o", 64, -1)) / 2.0;
  EXPECT_DOUBLE_EQ(Find(recall, "h2o").rows[1][1], expected);
}

TEST(Plot, FullCacheWithOneBudgetSpansTheXRange) {
  std::string csv = std::string(kSweepHeader) + "\n";
  for (int budget : {32, 512}) {
    csv += fmt::format("t,h2o,,{0},{0},bounded,all,5,0.5,,,,0.1,,,,,,,,,,,,,,\n", budget);
  }
  csv += "t,full,,4096,4096,bounded,all,5,1,,,,0,,,,,,,,,,,,,,\n";
  testing::TempDir dir;
  PlotResults(Table(csv), ResultKind::kSweep, dir.path());
  const auto recall = ReadDat(dir.path() / "recall_vs_budget.dat");
  const DatSeries& full = Find(recall, "full cache");
  ASSERT_EQ(full.rows.size(), 2u);
  EXPECT_EQ(full.rows[0], (std::vector<double>{32, 1}));
  EXPECT_EQ(full.rows[1], (std::vector<double>{4096, 1}));
  // No top-k values and no per-layer rows: those figures are skipped, not drawn empty.
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "topk_recall_vs_budget.png"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "recall_by_layer.png"));
}

TEST(Plot, SameInputGivesIdenticalBytes) {
  testing::TempDir a, b;
  const CsvTable table = Table(SweepCsv({"a.h5"}));
  PlotResults(table, ResultKind::kSweep, a.path());
  PlotResults(table, ResultKind::kSweep, b.path());
  for (const char* file : {"recall_by_layer.svg", "recall_by_layer.png", "recall_vs_budget.svg"}) {
    EXPECT_EQ(ReadFileToString(a.path() / file), ReadFileToString(b.path() / file)) << file;
  }
}

TEST(Plot, MemoryCarriesSparseSamplesForwardAndMarksPeak) {
  // Layer 1 is sampled only at step 0: its 50 bytes still count at steps 2 and 5.
  const std::string csv =
      "step,phase,category,layer,bytes\n"
      "0,prefill,kv_full,0,100\n"
      "0,prefill,kv_full,1,50\n"
      "0,prefill,prefill_transient,0,1000\n"
      "2,decode,kv_full,0,200\n"
      "2,decode,prefill_transient,0,0\n"
      "5,decode,kv_full,0,120\n";
  testing::TempDir dir;
  PlotResults(Table(csv, "memory.csv"), ResultKind::kMemory, dir.path());
  ExpectImages(dir.path(), "memory_timeline");
  const auto series = ReadDat(dir.path() / "memory_timeline.dat");
  const DatSeries& kv = Find(series, "kv_full");
  EXPECT_EQ(kv.rows, (std::vector<std::vector<double>>{{0, 150}, {2, 250}, {5, 170}}));
  const DatSeries& total = Find(series, "total");
  EXPECT_EQ(total.rows, (std::vector<std::vector<double>>{{0, 1150}, {2, 250}, {5, 170}}));
  const DatSeries& peak = Find(series, "peak 1.12 KiB at step 0");
  EXPECT_EQ(peak.rows, (std::vector<std::vector<double>>{{0, 1150}}));
}

TEST(Plot, RecurrenceHistogramPerLayer) {
  const std::string csv = "layer,interval,count\n0,1,10\n0,4,3\n1,2,7\n0,2,5\n";
  testing::TempDir dir;
  PlotResults(Table(csv, "recurrence.csv"), ResultKind::kRecurrence, dir.path());
  ExpectImages(dir.path(), "recurrence_hist");
  const auto series = ReadDat(dir.path() / "recurrence_hist.dat");
  EXPECT_EQ(Find(series, "gaps", "layer 0").rows,
            (std::vector<std::vector<double>>{{1, 10}, {2, 5}, {4, 3}}));
  EXPECT_EQ(Find(series, "gaps", "layer 1").rows, (std::vector<std::vector<double>>{{2, 7}}));
}

constexpr const char* kMrcHeader =
    "stream,mode,policy,cache_size,requests,faults,miss_ratio,opt_faults,competitive_ratio,"
    "fetched_bytes\n";

TEST(Plot, MissRatioCurvesUseTheMergedStream) {
  const std::string csv = std::string(kMrcHeader) +
                          "merged,offload,lru,4,100,40,0.4,20,2,0\n"
                          "merged,offload,lru,8,100,25,0.25,10,2.5,0\n"
                          "L0H0,offload,lru,4,50,50,1,20,2.5,0\n"
                          "merged,evict,lru,4,100,30,0.3,0,,0\n";
  testing::TempDir dir;
  PlotResults(Table(csv, "paging_mrc.csv"), ResultKind::kPagingMrc, dir.path());
  ExpectImages(dir.path(), "paging_mrc");
  const auto series = ReadDat(dir.path() / "paging_mrc.dat");
  const std::string offload = "offload mode (a fault fetches the page back)";
  EXPECT_EQ(Find(series, "lru", offload).rows,
            (std::vector<std::vector<double>>{{4, 0.4}, {8, 0.25}}));
  EXPECT_EQ(Find(series, "opt (offline optimum, from opt_faults)", offload).rows,
            (std::vector<std::vector<double>>{{4, 0.2}, {8, 0.1}}));
  EXPECT_EQ(Find(series, "lru", "evict mode (a missed page is lost)").rows,
            (std::vector<std::vector<double>>{{4, 0.3}}));
}

TEST(Plot, MissRatioCurvesPoolStreamsWithoutMerged) {
  const std::string csv = std::string(kMrcHeader) +
                          "L0H0,offload,lru,4,100,40,0.4,20,2,0\n"
                          "L0H1,offload,lru,4,300,60,0.2,30,2,0\n"
                          "L0H0,offload,opt,4,100,20,0.2,20,1,0\n"
                          "L0H1,offload,opt,4,300,30,0.1,30,1,0\n";
  testing::TempDir dir;
  PlotResults(Table(csv, "paging_mrc.csv"), ResultKind::kPagingMrc, dir.path());
  const auto series = ReadDat(dir.path() / "paging_mrc.dat");
  ASSERT_EQ(series.size(), 2u);  // the file's own opt rows, no derived line
  const std::string offload = "offload mode (a fault fetches the page back)";
  EXPECT_DOUBLE_EQ(Find(series, "lru", offload).rows[0][1], 100.0 / 400.0);
  EXPECT_DOUBLE_EQ(Find(series, "opt (Belady, lower bound)", offload).rows[0][1], 50.0 / 400.0);
}

TEST(Plot, PredictionFaultsAveragedOverSeeds) {
  const std::string csv =
      "stream,policy,cache_size,error_rate,seed,faults,opt_faults,eta0,eta1\n"
      "merged,phase-pred,8,0,1,100,90,0,0\n"
      "merged,phase-pred,8,0.1,1,130,90,3,4\n"
      "merged,phase-pred,8,0.1,2,150,90,5,2\n"
      "L0H0,phase-pred,8,0.1,2,999,90,5,2\n";
  testing::TempDir dir;
  PlotResults(Table(csv, "paging_predictions.csv"), ResultKind::kPagingPredictions, dir.path());
  ExpectImages(dir.path(), "paging_predictions");
  const auto series = ReadDat(dir.path() / "paging_predictions.dat");
  EXPECT_EQ(Find(series, "phase-pred", "cache size 8 pages").rows,
            (std::vector<std::vector<double>>{{0, 100, 100, 100}, {0.1, 140, 130, 150}}));
  EXPECT_EQ(Find(series, "OPT (Belady) faults", "cache size 8 pages").rows,
            (std::vector<std::vector<double>>{{0, 90}, {0.1, 90}}));
}

// paging_eta.csv (kvsim paging --eta0-rates ...): ratios to OPT, the least-squares slope in the
// label (eta0: (0, 12) and (2, 18) -> 3 faults per error; eta1: (0, 12), (1, 13) -> 1), the
// merged stream only.
TEST(Plot, PagingEtaPanelsAndSlopes) {
  const std::string csv =
      "stream,policy,cache_size,error_model,rate,seed,faults,opt_faults,competitive_ratio,eta0,"
      "eta1,semantics\n"
      "merged,mark0,4,perfect,0,1,12,10,1.2,0,0,step\n"
      "merged,mark0,4,eta0,0.5,1,18,10,1.8,2,0,step\n"
      "merged,mark0,4,eta1,0.5,1,13,10,1.3,0,1,step\n"
      "merged,mark0,4,adversarial,0.1,1,30,10,3,1,5,step\n"
      "L0H0,mark0,4,eta0,0.5,1,999,10,99.9,2,0,step\n";
  const CsvTable table = Table(csv, "paging_eta.csv");
  ASSERT_TRUE(IsPagingEtaTable(table));
  testing::TempDir dir;
  PlotPagingEta(table, dir.path());
  ExpectImages(dir.path(), "paging_eta");
  const auto series = ReadDat(dir.path() / "paging_eta.dat");
  const auto& eta0 = Find(series, "mark0 (slope 3.00 faults/error)", "cache 4 pages, eta0").rows;
  ASSERT_EQ(eta0.size(), 2u);
  EXPECT_NEAR(eta0[0][0], 0.0, 1e-12);
  EXPECT_NEAR(eta0[0][1], 1.2, 1e-12);
  EXPECT_NEAR(eta0[1][0], 0.2, 1e-12);
  EXPECT_NEAR(eta0[1][1], 1.8, 1e-12);
  const auto& eta1 = Find(series, "mark0 (slope 1.00 faults/error)", "cache 4 pages, eta1").rows;
  ASSERT_EQ(eta1.size(), 2u);
  EXPECT_NEAR(eta1[1][1], 1.3, 1e-12);
  const auto& adv = Find(series, "mark0", "cache 4 pages, adversarial").rows;
  ASSERT_EQ(adv.size(), 1u);
  EXPECT_NEAR(adv[0][0], 0.1, 1e-12);
  EXPECT_NEAR(adv[0][1], 3.0, 1e-12);
  const std::string bad =
      "stream,policy,cache_size,error_model,rate,seed,faults,opt_faults,eta0,"
      "eta1\nmerged,mark0,4,typo,0,1,12,10,0,0\n";
  EXPECT_THAT(ErrorOf([&] { ValidatePagingEta(Table(bad, "paging_eta.csv")); }),
              HasSubstr("'error_model': 'typo'"));
}

TEST(Plot, DetectsKindFromHeader) {
  EXPECT_EQ(DetectResultKind(Table(SweepCsv({"a"}))), ResultKind::kSweep);
  EXPECT_EQ(DetectResultKind(Table("step,phase,category,layer,bytes\n")), ResultKind::kMemory);
  EXPECT_EQ(DetectResultKind(Table("layer,interval,count\n")), ResultKind::kRecurrence);
  EXPECT_EQ(DetectResultKind(Table(kMrcHeader)), ResultKind::kPagingMrc);
  EXPECT_THAT(ErrorOf([] { DetectResultKind(Table("a,b\n", "odd.csv")); }),
              HasSubstr("odd.csv: cannot tell which result file"));
  EXPECT_EQ(ParseResultKind("paging_predictions"), ResultKind::kPagingPredictions);
  EXPECT_THAT(ErrorOf([] { ParseResultKind("sweeps"); }), HasSubstr("--kind 'sweeps'"));
}

TEST(Plot, MalformedCsvLeavesNoImage) {
  testing::TempDir dir;
  // A schema column missing.
  std::string missing = SweepCsv({"a"});
  missing.replace(missing.find("top32_recall_mean"), 17, "top32_recall");
  EXPECT_THAT(ErrorOf([&] { PlotResults(Table(missing), ResultKind::kSweep, dir.path()); }),
              HasSubstr("sweep.csv: missing column 'top32_recall_mean'"));
  // A bad number deep in the file: nothing is drawn before validation ends.
  std::string bad = SweepCsv({"a"});
  bad.replace(bad.rfind(",10,"), 4, ",ten,");
  EXPECT_THAT(ErrorOf([&] { PlotResults(Table(bad), ResultKind::kSweep, dir.path()); }),
              HasSubstr("sweep.csv:37: column 'steps': 'ten' is not a whole number"));
  EXPECT_THAT(ErrorOf([&] {
                PlotResults(Table("layer,interval,count\n0,0,3\n", "r.csv"),
                            ResultKind::kRecurrence, dir.path());
              }),
              HasSubstr("r.csv:2: column 'interval': 0 is below the minimum 1"));
  EXPECT_THAT(ErrorOf([&] {
                PlotResults(Table("layer,interval,count\n"), ResultKind::kRecurrence, dir.path());
              }),
              HasSubstr("no data rows"));
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

// Runs `body` with PATH pointing at `dir` only, restoring PATH after.
void WithPath(const std::string& dir, const std::function<void()>& body) {
  const std::string saved = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  ::setenv("PATH", dir.c_str(), 1);
  body();
  ::setenv("PATH", saved.c_str(), 1);
}

TEST(Plot, FailingGnuplotLeavesNoImage) {
  testing::TempDir bin, out;
  // A gnuplot that writes half an image and fails.
  const auto fake = bin.path() / "gnuplot";
  WriteFileAtomically(fake,
                      "#!/bin/sh\necho partial > recall_vs_budget.png\n"
                      "echo 'line 3: invalid command' >&2\nexit 1\n");
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  const CsvTable table = Table(SweepCsv({"a"}));
  WithPath(bin.path().string(), [&] {
    const std::string error = ErrorOf([&] { PlotResults(table, ResultKind::kSweep, out.path()); });
    EXPECT_THAT(error, HasSubstr("failed drawing figure 'recall_vs_budget'"));
    EXPECT_THAT(error, HasSubstr("line 3: invalid command"));
  });
  EXPECT_THAT(out.Entries(), IsEmpty());
}

TEST(Plot, MissingGnuplotSaysWhatToInstall) {
  testing::TempDir empty_bin, out;
  const CsvTable table = Table("layer,interval,count\n0,1,3\n");
  WithPath(empty_bin.path().string(), [&] {
    EXPECT_THAT(ErrorOf([&] { PlotResults(table, ResultKind::kRecurrence, out.path()); }),
                HasSubstr("gnuplot not found on PATH"));
  });
  EXPECT_THAT(out.Entries(), IsEmpty());
}

}  // namespace
}  // namespace kvsim::analysis
