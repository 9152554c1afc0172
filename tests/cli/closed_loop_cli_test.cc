#include <gtest/gtest.h>

#include <filesystem>
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

struct Means {
  double kl = 0.0;
  double agree = 0.0;
  double mass_recall = 0.0;
  double rel_l2 = 0.0;
};

Means RunAndRead(const TempDir& dir, const std::string& policy, const std::string& budget) {
  const std::string csv = dir.File(policy + "_" + budget + ".csv");
  const CommandResult r = RunKvsim("closed-loop --policy " + policy + " --budget " + budget +
                                   " --new-tokens 96 --csv " + ShellQuote(csv));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("open_mass_recall_mean"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kl_mean"), std::string::npos) << r.out;
  const analysis::CsvTable t = analysis::CsvTable::Read(csv);
  EXPECT_EQ(t.num_rows(), 96u);
  Means m;
  for (size_t i = 0; i < t.num_rows(); ++i) {
    m.kl += t.Number(i, t.Column("kl"));
    m.agree += t.Number(i, t.Column("agree"));
    m.mass_recall += t.Number(i, t.Column("open_mass_recall"));
    m.rel_l2 += t.Number(i, t.Column("open_rel_l2_error"));
  }
  const auto rows = static_cast<double>(t.num_rows());
  m.kl /= rows;
  m.agree /= rows;
  m.mass_recall /= rows;
  m.rel_l2 /= rows;
  return m;
}

// Acceptance: budgets 8 / 16 / 64 / full on the bundled stories260K model. The full budget
// reproduces the full run exactly; smaller budgets lose attention mass (open loop) and do more
// real damage (closed loop), consistently.
TEST(ClosedLoopCli, OpenLoopProxiesAndRealDamageMoveTogether) {
  const TempDir dir;
  for (const std::string policy : {"h2o", "streaming"}) {
    std::vector<Means> m;
    for (const std::string budget : {"8", "16", "64", "1000"}) {
      m.push_back(RunAndRead(dir, policy, budget));
    }
    EXPECT_EQ(m[3].kl, 0.0) << policy;
    EXPECT_EQ(m[3].agree, 1.0) << policy;
    EXPECT_DOUBLE_EQ(m[3].mass_recall, 1.0) << policy;
    for (size_t i = 0; i + 1 < m.size(); ++i) {
      EXPECT_LT(m[i].mass_recall, m[i + 1].mass_recall) << policy << " budget index " << i;
      EXPECT_GT(m[i].kl, m[i + 1].kl) << policy << " budget index " << i;
      EXPECT_GT(m[i].rel_l2, m[i + 1].rel_l2) << policy << " budget index " << i;
    }
    EXPECT_LE(m[0].agree, m[2].agree) << policy;
  }
}

TEST(ClosedLoopCli, FaithfulLaqRunsOnlyInClosedLoop) {
  const TempDir dir;
  const CommandResult r = RunKvsim("closed-loop --policy laqpp --budget 8 --new-tokens 16");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("laqpp"), std::string::npos) << r.out;
}

// Policies that rewrite entries (merges, quantization) or mask attention run in the loop.
TEST(ClosedLoopCli, RewritingAndMaskingPoliciesRun) {
  for (const char* policy : {"d2o", "kivi", "mikv", "mpcache"}) {
    const CommandResult r =
        RunKvsim(std::string("closed-loop --policy ") + policy + " --budget 8 --new-tokens 16");
    EXPECT_EQ(r.exit_code, 0) << policy << ": " << r.err;
    EXPECT_NE(r.out.find("agreement"), std::string::npos) << r.out;
  }
}

TEST(ClosedLoopCli, BadInputNamesTheOptionAndLeavesNoFile) {
  const TempDir dir;
  const std::string csv = dir.File("out.csv");
  CommandResult r = RunKvsim("closed-loop --policy nope --budget 8 --csv " + ShellQuote(csv));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--policy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("laq"), std::string::npos) << r.err;
  r = RunKvsim("closed-loop --policy gate --budget 4 --csv " + ShellQuote(csv));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("gate_flags"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--gate-flags"), std::string::npos) << r.err;
  // A trace without flags given as the flags' source: named, with the dataset it lacks.
  const std::string no_flags = dir.File("captured.h5");
  ASSERT_EQ(RunKvsim("capture --decode 4 -o " + ShellQuote(no_flags)).exit_code, 0);
  r = RunKvsim("closed-loop --policy gate --budget 4 --gate-flags " + ShellQuote(no_flags) +
               " --csv " + ShellQuote(csv));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--gate-flags"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/gate_flags"), std::string::npos) << r.err;
  for (const std::string& name : dir.Entries()) std::filesystem::remove(dir.path() / name);
  r = RunKvsim("closed-loop --policy h2o --budget 4 --new-tokens 100000 --csv " + ShellQuote(csv));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--new-tokens"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(csv));
  EXPECT_TRUE(dir.Entries().empty());
}

}  // namespace
}  // namespace kvsim
