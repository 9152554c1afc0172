// Mark0, the per-type error model and the adversary of "Paging with Succinct Predictions"
// (Antoniadis et al., ICML 2023; card memory-and-paging.md 6.5), on hand-worked sequences with
// one request per step. Counts below are worked out by hand in the comments, not read back from
// the code:
//  - consistency: follow-the-bits equals OPT with exact bits (predictions_test.cc); Mark0 is a
//    marking algorithm and so cannot be 1-consistent (k = 2, a b c d a b: 6 faults, OPT 5),
//    and no constant factor is asserted for it (see ExactBitsBetweenOptAndKTimesOpt);
//  - per-error costs on the "gadget" P_1 .. P_{k-1} p n P_1 .. P_{k-1}: one wrong keep costs
//    k - 1 extra faults, one wrong discard costs 1, for Mark0 and for follow-the-bits;
//  - robustness: adversarial bits on x y a b (a b)^m make follow-the-bits fault on every
//    request (ratio grows with m) while Mark0 stays within k OPT.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/error.h"
#include "sim/paging/experiment.h"
#include "sim/paging/predictions.h"
#include "sim/paging/registry.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

int64_t FaultsOf(const DenseRequests& dense,
                 const std::string& name,
                 int64_t k,
                 std::span<const uint8_t> bits,
                 uint64_t seed = 0) {
  auto policy = MakePagingPolicy(name);
  ReplayOptions options;
  options.cache_size = k;
  options.bits = bits;
  options.seed = seed;
  return Replay(dense, *policy, options).faults;
}

// P_1 .. P_{k-1} (ids 1..k-1), p (id 100), n (id 200), P_1 .. P_{k-1}. Belady (k slots) evicts
// p for n and nothing else: OPT = k + 1, and p's request is the only true 1.
DenseRequests Gadget(int64_t k) {
  std::vector<uint64_t> pages;
  for (int64_t j = 1; j < k; ++j) pages.push_back(static_cast<uint64_t>(j));
  pages.push_back(100);
  pages.push_back(200);
  for (int64_t j = 1; j < k; ++j) pages.push_back(static_cast<uint64_t>(j));
  return Densify(testing::SequenceOf(pages));
}

TEST(Mark0, NotOneConsistentOnTheHandExample) {
  // k = 2, a b c d a b. OPT: a b, c evicts b (a is needed first), d evicts c, a hits, b faults:
  // 5. Mark0 with exact bits: c starts a phase and evicts b (bit 1); d finds only a unmarked
  // (bit 0) and must evict it, where OPT evicted the marked c; then a and b fault: 6.
  const DenseRequests dense = Densify(testing::SequenceOf({1, 2, 3, 4, 1, 2}));
  const std::vector<uint8_t> bits = OracleDiscardBits(dense, 2);
  // b for c, c for d, and a (never again; ties go to the smaller id) for the last b.
  EXPECT_EQ(bits, (std::vector<uint8_t>{0, 1, 1, 0, 1, 0}));
  EXPECT_EQ(FaultsOf(dense, "opt", 2, {}), 5);
  EXPECT_EQ(FaultsOf(dense, "discard-pred", 2, bits), 5);
  EXPECT_EQ(FaultsOf(dense, "mark0", 2, bits), 6);
  EXPECT_EQ(FaultsOf(dense, "mark0-rand", 2, bits, 7), 6);  // no choice is random here
}

// Consistency with exact bits. Mark0 never beats OPT and, being a marking algorithm, stays
// within k OPT; no constant factor is asserted: the card states none for Mark0 and the paper's
// theorem could not be read. Measured: at most 1.83 OPT on these sequences, but 2.15 OPT on the
// shipped stories260K trace (top-8 merged, classic semantics, k = 42), so "2-consistent" would
// be false for this rule. The worst ratio is printed.
TEST(Mark0, ExactBitsBetweenOptAndKTimesOpt) {
  double worst = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    const DenseRequests dense = Densify(testing::RandomSequence(seed, 500, 24, 1));
    for (int64_t k : {2, 4, 8, 12}) {
      const std::vector<uint8_t> bits = OracleDiscardBits(dense, k);
      const int64_t opt = FaultsOf(dense, "opt", k, {});
      for (const char* name : {"mark0", "mark0-rand"}) {
        const int64_t faults = FaultsOf(dense, name, k, bits, seed);
        EXPECT_LE(faults, k * opt) << name << " seed=" << seed << " k=" << k;
        EXPECT_GE(faults, opt) << name << " seed=" << seed << " k=" << k;
        worst = std::max(worst, static_cast<double>(faults) / static_cast<double>(opt));
      }
    }
  }
  std::printf("worst mark0 / OPT with exact bits: %.3f\n", worst);
}

TEST(Mark0, GadgetPerErrorCostsAreKMinusOneForAKeepAndOneForADiscard) {
  for (int64_t k : {2, 3, 4, 6}) {
    const DenseRequests dense = Gadget(k);
    const std::vector<uint8_t> truth = OracleDiscardBits(dense, k);
    std::vector<uint8_t> expected(dense.page.size(), 0);
    expected[static_cast<size_t>(k - 1)] = 1;  // p's request
    ASSERT_EQ(truth, expected) << "k=" << k;
    const int64_t opt = FaultsOf(dense, "opt", k, {});
    ASSERT_EQ(opt, k + 1);
    // Wrong keep on p: n finds every unmarked page kept and evicts P_1 (earliest admitted;
    // follow-the-bits: least recent), P_1 evicts P_2, ..., P_{k-1} evicts p: k - 1 extra.
    std::vector<uint8_t> keep = truth;
    keep[static_cast<size_t>(k - 1)] = 0;
    // Wrong discard on P_1's first request: n evicts P_1 (discardable, older than p), P_1
    // evicts p, the rest hit: 1 extra.
    std::vector<uint8_t> discard = truth;
    discard[0] = 1;
    for (const char* name : {"discard-pred", "mark0"}) {
      EXPECT_EQ(FaultsOf(dense, name, k, truth), opt) << name << " k=" << k;
      EXPECT_EQ(FaultsOf(dense, name, k, keep), opt + k - 1) << name << " k=" << k;
      EXPECT_EQ(FaultsOf(dense, name, k, discard), opt + 1) << name << " k=" << k;
    }
  }
}

TEST(FitLine, LeastSquaresOnHandPoints) {
  // y = 3 + 2x exactly, then points (0,0), (1,1), (2,1): slope 0.5, intercept 1/6.
  const std::vector<double> x{0, 1, 2, 3}, y{3, 5, 7, 9};
  EXPECT_DOUBLE_EQ(FitLine(x, y).slope, 2.0);
  EXPECT_DOUBLE_EQ(FitLine(x, y).intercept, 3.0);
  const std::vector<double> x2{0, 1, 2}, y2{0, 1, 1};
  EXPECT_NEAR(FitLine(x2, y2).slope, 0.5, 1e-12);
  EXPECT_NEAR(FitLine(x2, y2).intercept, 1.0 / 6.0, 1e-12);
  const std::vector<double> same{1, 1}, ys{2, 4};
  EXPECT_TRUE(std::isnan(FitLine(same, ys).slope));
  EXPECT_DOUBLE_EQ(FitLine(same, ys).intercept, 3.0);
}

// The driver's fitted slopes on the gadget: eta0 at rate 1 flips exactly p's bit, so the eta0
// slope is the per-error cost k - 1; every eta1 error costs at most 1 there (each wrong discard
// of P_j evicts P_j once), so the eta1 slope lies in [0, 1]: the two slopes bracket 1 and k - 1.
TEST(EtaSweep, DriverSlopesOnTheGadget) {
  for (int64_t k : {3, 5}) {
    std::vector<uint64_t> pages;
    for (int64_t j = 1; j < k; ++j) pages.push_back(static_cast<uint64_t>(j));
    pages.push_back(100);
    pages.push_back(200);
    for (int64_t j = 1; j < k; ++j) pages.push_back(static_cast<uint64_t>(j));
    const std::vector<RequestSequence> streams{testing::SequenceOf(pages)};
    ExperimentOptions options;
    options.cache_sizes = {k};
    options.policies = {"discard-pred", "mark0", "lru"};
    options.eta0_rates = {0.5, 1.0};
    options.eta1_rates = {0.25, 0.5, 1.0};
    options.adversarial_budgets = {0.5};
    options.seeds = 6;
    const ExperimentResult result = RunExperiment(streams, options);
    ASSERT_EQ(result.eta_fit.size(), 2u) << "lru reads no bits";
    ASSERT_EQ(result.eta.size(), 2u * 7u * 6u);
    for (const EtaRow& r : result.eta) {
      EXPECT_EQ(r.opt_faults, k + 1);
      if (r.error_model == "eta0") {
        EXPECT_EQ(r.eta1, 0);
      }
      if (r.error_model == "eta1") {
        EXPECT_EQ(r.eta0, 0);
        EXPECT_LE(r.faults - r.opt_faults, r.eta1) << r.policy;
      }
      if (r.error_model == "perfect") {
        EXPECT_EQ(r.faults, r.opt_faults) << r.policy;
      }
    }
    for (const EtaFitRow& f : result.eta_fit) {
      EXPECT_DOUBLE_EQ(f.perfect_faults, static_cast<double>(k + 1)) << f.policy;
      EXPECT_NEAR(f.eta0_slope, static_cast<double>(k - 1), 1e-9) << f.policy << " k=" << k;
      EXPECT_NEAR(f.eta0_intercept, static_cast<double>(k + 1), 1e-9) << f.policy;
      EXPECT_GE(f.eta1_slope, 0.0) << f.policy;
      EXPECT_LE(f.eta1_slope, 1.0) << f.policy;
      EXPECT_EQ(f.eta0_points, 6 * 3);
      EXPECT_EQ(f.adversarial_points, 6);
    }
  }
}

TEST(CorruptBitsByType, EqualRatesAreTheSymmetricFlipAndEachRateTouchesItsOwnType) {
  std::vector<uint8_t> truth(4000);
  for (size_t i = 0; i < truth.size(); ++i) truth[i] = static_cast<uint8_t>(i % 4 == 0);
  for (double p : {0.0, 0.1, 0.37, 1.0}) {
    const NoisyBits a = CorruptBits(truth, p, 5, 3);
    const NoisyBits b = CorruptBitsByType(truth, p, p, 5, 3);
    EXPECT_EQ(a.bits, b.bits);
    EXPECT_EQ(a.eta0, b.eta0);
    EXPECT_EQ(a.eta1, b.eta1);
  }
  const NoisyBits only0 = CorruptBitsByType(truth, 0.5, 0.0, 5, 3);
  const NoisyBits only1 = CorruptBitsByType(truth, 0.0, 0.5, 5, 3);
  EXPECT_EQ(only0.eta1, 0);
  EXPECT_EQ(only1.eta0, 0);
  EXPECT_NEAR(static_cast<double>(only0.eta0) / 1000.0, 0.5, 0.06);
  EXPECT_NEAR(static_cast<double>(only1.eta1) / 3000.0, 0.5, 0.04);
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] == 0) {
      ASSERT_EQ(only0.bits[i], 0);
    } else {
      ASSERT_EQ(only1.bits[i], 1);
    }
  }
  const NoisyBits all = CorruptBitsByType(truth, 1.0, 1.0, 5, 3);
  EXPECT_EQ(all.eta0, 1000);
  EXPECT_EQ(all.eta1, 3000);
}

// x y a b (a b)^m with k = 3. Belady: b evicts x (x and y are never requested again; ties go to
// the smaller id), then everything hits: OPT = 4; true bits: x 1, every other request 0.
// The adversary (budget = every request): one wrong keep (only x has a true 1; at most k - 1),
// then wrong discards on every a and b request that has a next one (reuse distance 2), none on
// y or the last a and b (never requested again).
// follow-the-bits: x and y kept, a and b discardable, one slot left for a and b: b evicts a, a
// evicts b, ...: 4 + 2m faults. Mark0: b starts a phase and evicts a (discardable, unmarked);
// a finds x and y unmarked, both kept, and evicts x (earliest admitted; mark0-rand x or y);
// then y, a, b stay: 5 faults <= k OPT = 12.
TEST(Adversary, FollowTheBitsIsNotRobustMark0Is) {
  const int m = 40;
  std::vector<uint64_t> pages{10, 11, 1, 2};
  for (int i = 0; i < m; ++i) {
    pages.push_back(1);
    pages.push_back(2);
  }
  const DenseRequests dense = Densify(testing::SequenceOf(pages));
  const int64_t k = 3;
  const std::vector<uint8_t> truth = OracleDiscardBits(dense, k);
  std::vector<uint8_t> expected_truth(pages.size(), 0);
  expected_truth[0] = 1;
  ASSERT_EQ(truth, expected_truth);
  const NoisyBits adv = AdversarialBits(dense, truth, /*keep_bit=*/0, k, dense.requests());
  std::vector<uint8_t> expected(pages.size(), 1);
  expected[0] = 0;                 // x: wrong keep
  expected[1] = 0;                 // y: never requested again, left alone
  expected[pages.size() - 2] = 0;  // the last a and b: never requested again
  expected[pages.size() - 1] = 0;
  EXPECT_EQ(adv.bits, expected);
  EXPECT_EQ(adv.eta0, 1);
  EXPECT_EQ(adv.eta1, 2 * m);
  const int64_t opt = FaultsOf(dense, "opt", k, {});
  ASSERT_EQ(opt, 4);
  EXPECT_EQ(FaultsOf(dense, "discard-pred", k, adv.bits), 4 + 2 * m);
  EXPECT_GT(FaultsOf(dense, "discard-pred", k, adv.bits), k * opt);
  EXPECT_EQ(FaultsOf(dense, "mark0", k, adv.bits), 5);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    EXPECT_EQ(FaultsOf(dense, "mark0-rand", k, adv.bits, seed), 5) << "seed=" << seed;
  }
  // A smaller budget places the wrong keep first, then the earliest-reused discards.
  const NoisyBits small = AdversarialBits(dense, truth, 0, k, 3);
  EXPECT_EQ(small.eta0, 1);
  EXPECT_EQ(small.eta1, 2);
  EXPECT_EQ(small.bits[2], 1);
  EXPECT_EQ(small.bits[3], 1);
  EXPECT_EQ(small.bits[4], 0);
}

// Robustness whatever the bits: a marking algorithm faults at most k times per phase and OPT at
// least once per phase after the first (and k times in it), so faults <= k OPT. Checked with
// adversarial bits of several budgets and with fully inverted bits on random sequences.
TEST(Adversary, MarkingPoliciesStayWithinKTimesOpt) {
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const DenseRequests dense = Densify(testing::RandomSequence(seed, 600, 20, 1));
    for (int64_t k : {2, 4, 8}) {
      const std::vector<uint8_t> truth = OracleDiscardBits(dense, k);
      const int64_t opt = FaultsOf(dense, "opt", k, {});
      std::vector<uint8_t> inverted(truth.size());
      for (size_t i = 0; i < truth.size(); ++i) inverted[i] = static_cast<uint8_t>(1 - truth[i]);
      std::vector<std::vector<uint8_t>> cases{inverted};
      for (int64_t budget : {int64_t{5}, int64_t{50}, dense.requests()}) {
        cases.push_back(AdversarialBits(dense, truth, 0, k, budget).bits);
      }
      for (const auto& bits : cases) {
        for (const char* name : {"mark0", "mark0-rand"}) {
          EXPECT_LE(FaultsOf(dense, name, k, bits, seed), k * opt)
              << name << " seed=" << seed << " k=" << k;
        }
      }
    }
  }
}

// Step semantics (several pages per step, pinned together): whatever the bits, Mark0 names only
// unpinned resident victims (the engine throws otherwise) and, with the step's pages counted as
// marked, still faults at least as often as Belady.
TEST(Mark0, StepSemanticsWithPinsAndAnyBits) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const DenseRequests dense = Densify(testing::RandomSequence(seed, 300, 30, 6));
    for (int64_t k : {3, 6, 12}) {
      const std::vector<uint8_t> truth = OracleDiscardBits(dense, k);
      const int64_t opt = FaultsOf(dense, "opt", k, {});
      for (const auto& bits : {truth, AdversarialBits(dense, truth, 0, k, dense.requests()).bits,
                               CorruptBitsByType(truth, 0.5, 0.5, seed, 0).bits}) {
        for (const char* name : {"mark0", "mark0-rand"}) {
          EXPECT_GE(FaultsOf(dense, name, k, bits, seed), opt)
              << name << " seed=" << seed << " k=" << k;
        }
      }
    }
  }
}

// Randomized robustness in expectation: bits that name no discardable page (all 0: every bit-1
// truth turned into a wrong keep) leave every choice to the draw, so mark0-rand is the randomized
// Marker, (2 H_k - 1)-competitive in expectation. On the cyclic sequence over k + 1 pages
// deterministic Mark0 (then Marker: it evicts the earliest admitted page, which is the next one
// requested) faults on every request, about k OPT, while the mean of mark0-rand over 30 seeds
// stays below 2 H_k OPT.
TEST(Adversary, RandomizedMark0WithinTwoHkOptInExpectation) {
  const int64_t k = 8;
  std::vector<uint64_t> pages;
  for (int i = 0; i < 900; ++i) pages.push_back(static_cast<uint64_t>(i % (k + 1)));
  const DenseRequests dense = Densify(testing::SequenceOf(pages));
  const std::vector<uint8_t> zeros(pages.size(), 0);
  const int64_t opt = FaultsOf(dense, "opt", k, {});
  double h_k = 0;
  for (int64_t i = 1; i <= k; ++i) h_k += 1.0 / static_cast<double>(i);
  EXPECT_EQ(FaultsOf(dense, "mark0", k, zeros), static_cast<int64_t>(pages.size()));
  EXPECT_GT(static_cast<double>(FaultsOf(dense, "mark0", k, zeros)),
            2 * h_k * static_cast<double>(opt));
  double sum = 0;
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    sum += static_cast<double>(FaultsOf(dense, "mark0-rand", k, zeros, seed));
  }
  EXPECT_LE(sum / 30.0, 2 * h_k * static_cast<double>(opt)) << "OPT " << opt;
}

TEST(EtaSweep, SameSeedSameRowsAndBadRatesAreRefused) {
  const std::vector<RequestSequence> streams{testing::RandomSequence(4, 300, 16, 1)};
  ExperimentOptions options;
  options.cache_sizes = {4};
  options.policies = {"mark0-rand", "phase-pred"};
  options.eta0_rates = {0.2};
  options.eta1_rates = {0.2};
  options.adversarial_budgets = {0.05};
  options.seeds = 3;
  const ExperimentResult a = RunExperiment(streams, options);
  const ExperimentResult b = RunExperiment(streams, options);
  ASSERT_EQ(a.eta.size(), b.eta.size());
  for (size_t i = 0; i < a.eta.size(); ++i) {
    EXPECT_EQ(a.eta[i].faults, b.eta[i].faults);
    EXPECT_EQ(a.eta[i].eta0, b.eta[i].eta0);
    EXPECT_EQ(a.eta[i].eta1, b.eta[i].eta1);
  }
  options.eta1_rates = {1.5};
  try {
    RunExperiment(streams, options);
    ADD_FAILURE() << "rate 1.5 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--eta1-rates"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsim::paging
