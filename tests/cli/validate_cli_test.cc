#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "analysis/csv.h"
#include "common/test_util.h"

namespace kvsim {
namespace {

using ::kvsim::testing::CommandResult;
using ::kvsim::testing::RunKvsim;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;

std::string WritePrompts(const TempDir& dir, const std::string& text) {
  const std::string path = dir.File("prompts.txt");
  std::ofstream(path) << text;
  return path;
}

TEST(ValidateCli, WritesCellsAndCorrelationsThatAgree) {
  const TempDir dir;
  const std::string prompts = WritePrompts(dir,
                                           "# two stories\n"
                                           "Once upon a time there was a girl named Lily.\n"
                                           "\n"
                                           "Tom had a big red ball and a small dog.\n"
                                           "The sun was shining and the birds were singing.\n");
  const std::string out = dir.File("out");
  const CommandResult r =
      RunKvsim("validate --prompts " + ShellQuote(prompts) +
               " --policies streaming,h2o --budgets 4,8,1000 --new-tokens 16 --bootstrap 50 "
               "--no-plot --out " +
               ShellQuote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("3 prompts x 2 policies x 3 budgets"), std::string::npos) << r.out;
  const analysis::CsvTable cells = analysis::CsvTable::Read(out + "/validate_cells.csv");
  ASSERT_EQ(cells.num_rows(), 18u);
  for (size_t i = 0; i < cells.num_rows(); ++i) {
    if (cells.Text(i, cells.Column("budget")) == "1000") {
      EXPECT_EQ(cells.Number(i, cells.Column("kl")), 0.0);
      EXPECT_EQ(cells.Number(i, cells.Column("mass_recall")), 1.0);
    }
  }
  const analysis::CsvTable rho = analysis::CsvTable::Read(out + "/validate_spearman.csv");
  // Groups: all, 3 budgets, 2 policies; 7 proxies x 4 targets.
  ASSERT_EQ(rho.num_rows(), 6u * 28u);
  // The overall rho recomputed from the cells file (ranks by hand, ties averaged).
  std::vector<double> recall, kl;
  for (size_t i = 0; i < cells.num_rows(); ++i) {
    recall.push_back(cells.Number(i, cells.Column("mass_recall")));
    kl.push_back(cells.Number(i, cells.Column("kl")));
  }
  const auto ranks = [](const std::vector<double>& v) {
    std::vector<double> ranked(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      double below = 0, equal = 0;
      for (const double x : v) {
        below += x < v[i] ? 1 : 0;
        equal += x == v[i] ? 1 : 0;
      }
      ranked[i] = below + (equal + 1) / 2;
    }
    return ranked;
  };
  const std::vector<double> rr = ranks(recall), rk = ranks(kl);
  double mr = 0, mk = 0, sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rr.size(); ++i) {
    mr += rr[i] / static_cast<double>(rr.size());
    mk += rk[i] / static_cast<double>(rk.size());
  }
  for (size_t i = 0; i < rr.size(); ++i) {
    sxy += (rr[i] - mr) * (rk[i] - mk);
    sxx += (rr[i] - mr) * (rr[i] - mr);
    syy += (rk[i] - mk) * (rk[i] - mk);
  }
  bool found = false;
  for (size_t i = 0; i < rho.num_rows(); ++i) {
    if (rho.Text(i, rho.Column("proxy")) != "mass_recall" ||
        rho.Text(i, rho.Column("target")) != "kl" || rho.Text(i, rho.Column("group")) != "all") {
      continue;
    }
    found = true;
    EXPECT_NEAR(rho.Number(i, rho.Column("rho")), sxy / std::sqrt(sxx * syy), 1e-12);
    EXPECT_NEAR(rho.Number(i, rho.Column("oriented_rho")), -sxy / std::sqrt(sxx * syy), 1e-12);
    EXPECT_EQ(rho.Integer(i, rho.Column("cells")), 18);
    EXPECT_LE(rho.Number(i, rho.Column("ci_low")), rho.Number(i, rho.Column("ci_high")));
  }
  EXPECT_TRUE(found);
  EXPECT_FALSE(std::filesystem::exists(out + "/validate_spearman.png"));  // --no-plot
}

TEST(ValidateCli, BadInputsAreCleanErrors) {
  const TempDir dir;
  const std::string one = WritePrompts(dir, "# only one\nOnce upon a time\n");
  CommandResult r =
      RunKvsim("validate --prompts " + ShellQuote(one) + " --out " + ShellQuote(dir.File("o1")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--prompts"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("at least 2"), std::string::npos) << r.err;
  const std::string two = WritePrompts(dir, "Once upon a time\nTom had a ball\n");
  r = RunKvsim("validate --prompts " + ShellQuote(two) + " --policies oracle --out " +
               ShellQuote(dir.File("o2")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("oracle"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.File("o2") + "/validate_cells.csv"));
  r = RunKvsim("validate --prompts " + ShellQuote(dir.File("missing.txt")) + " --out " +
               ShellQuote(dir.File("o3")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("missing.txt"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kvsim
