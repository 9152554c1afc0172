// Arrivals: rate and burstiness of the generated processes, files, errors.
#include "sim/serving/workload.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "common/error.h"
#include "common/test_util.h"

namespace kvsim::serving {
namespace {

// Mean and coefficient of variation of the inter-arrival times.
std::pair<double, double> GapStats(const std::vector<ServingRequest>& r) {
  std::vector<double> gaps;
  double prev = 0.0;
  for (const ServingRequest& q : r) {
    gaps.push_back(q.arrival_s - prev);
    prev = q.arrival_s;
  }
  double mean = 0.0, var = 0.0;
  for (double g : gaps) mean += g;
  mean /= static_cast<double>(gaps.size());
  for (double g : gaps) var += (g - mean) * (g - mean);
  var /= static_cast<double>(gaps.size() - 1);
  return {mean, std::sqrt(var) / mean};
}

TEST(Workload, PoissonAndGammaHaveTheirRateAndBurstiness) {
  WorkloadSpec w;
  w.rate_per_s = 4.0;
  w.num_requests = 20000;
  w.seed = 1;
  const auto [mean, cv] = GapStats(MakeRequests(w, {"a"}));
  EXPECT_NEAR(mean, 0.25, 0.01);
  EXPECT_NEAR(cv, 1.0, 0.03);
  w.kind = WorkloadSpec::Kind::kGamma;
  w.cv = 3.0;
  const auto [gmean, gcv] = GapStats(MakeRequests(w, {"a"}));
  EXPECT_NEAR(gmean, 0.25, 0.02);
  EXPECT_NEAR(gcv, 3.0, 0.2);
}

TEST(Workload, SameSeedSameRequestsAndTraceChoice) {
  WorkloadSpec w;
  w.num_requests = 50;
  w.seed = 9;
  const auto a = MakeRequests(w, {"x", "y", "z"});
  const auto b = MakeRequests(w, {"x", "y", "z"});
  ASSERT_EQ(a.size(), b.size());
  int used[3] = {0, 0, 0};
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].arrival_s, b[i].arrival_s);
    EXPECT_EQ(a[i].trace, b[i].trace);
    EXPECT_EQ(a[i].id, static_cast<int64_t>(i));
    ++used[a[i].trace];
  }
  EXPECT_GT(used[0] * used[1] * used[2], 0);
  w.trace_choice = "cycle";
  const auto c = MakeRequests(w, {"x", "y", "z"});
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i].trace, static_cast<int>(i % 3));
}

TEST(Workload, FileRowsAreSortedByArrivalAndNamedTracesResolved) {
  testing::TempDir dir;
  std::ofstream(dir.File("a.csv")) << "arrival_s,trace\n2.5,b\n0.5,a\n1,b\n";
  WorkloadSpec w;
  w.kind = WorkloadSpec::Kind::kFile;
  w.file = dir.File("a.csv");
  const auto r = MakeRequests(w, {"a", "b"});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].arrival_s, 0.5);
  EXPECT_EQ(r[0].trace, 0);
  EXPECT_EQ(r[2].arrival_s, 2.5);
  EXPECT_EQ(r[2].trace, 1);
}

TEST(Workload, BadFileNamesFileLineAndColumn) {
  testing::TempDir dir;
  std::ofstream(dir.File("a.csv")) << "arrival_s,trace\n0.5,a\n1,zz\n";
  WorkloadSpec w;
  w.kind = WorkloadSpec::Kind::kFile;
  w.file = dir.File("a.csv");
  try {
    MakeRequests(w, {"a", "b"});
    FAIL();
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("a.csv:3"), std::string::npos) << what;
    EXPECT_NE(what.find("'zz'"), std::string::npos) << what;
  }
  std::ofstream(dir.File("b.csv")) << "arrival_s,trace\n-1,a\n";
  w.file = dir.File("b.csv");
  EXPECT_THROW(MakeRequests(w, {"a"}), InputError);
  WorkloadSpec bad;
  bad.rate_per_s = 0.0;
  EXPECT_THROW(bad.Validate("t"), InputError);
}

}  // namespace
}  // namespace kvsim::serving
