// The offline optima against exhaustive search, and the competitive bounds they anchor.
#include <gtest/gtest.h>

#include <bit>
#include <map>

#include "sim/paging/evict_optimum.h"
#include "sim/paging/registry.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

using testing::RandomSequence;

int64_t Faults(
    const RequestSequence& seq, const std::string& name, int64_t k, Mode mode, uint64_t seed = 0) {
  const DenseRequests dense = Densify(seq);
  auto policy = MakePagingPolicy(name);
  ReplayOptions options;
  options.cache_size = k;
  options.mode = mode;
  options.seed = seed;
  return Replay(dense, *policy, options).faults;
}

// Fewest offload faults over every eviction choice the engine allows (any unpinned victim;
// bypass only when all residents are pinned): exhaustive search memoised on (request, cache).
class OffloadBruteForce {
 public:
  OffloadBruteForce(const RequestSequence& seq, int64_t k) : seq_(seq), k_(k) {
    for (int64_t s = 0; s < seq.steps(); ++s) {
      for (int64_t i = seq.step_begin[s]; i < seq.step_begin[s + 1]; ++i) {
        step_start_.push_back(seq.step_begin[s]);
      }
    }
  }
  int64_t Solve() { return Best(0, 0); }

 private:
  int64_t Best(int64_t i, uint32_t cache) {
    if (i == seq_.requests()) return 0;
    const auto key = std::make_pair(i, cache);
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    const uint32_t bit = 1u << seq_.pages[i];
    int64_t best = 0;
    if (cache & bit) {
      best = Best(i + 1, cache);
    } else if (std::popcount(cache) < k_) {
      best = 1 + Best(i + 1, cache | bit);
    } else {
      uint32_t pinned = 0;
      for (int64_t j = step_start_[i]; j < i; ++j) pinned |= 1u << seq_.pages[j];
      pinned &= cache;
      if (pinned == cache) {
        best = 1 + Best(i + 1, cache);
      } else {
        best = std::numeric_limits<int64_t>::max();
        for (uint32_t v = 0; v < 32; ++v) {
          const uint32_t vb = 1u << v;
          if ((cache & vb) && !(pinned & vb)) {
            best = std::min(best, 1 + Best(i + 1, (cache & ~vb) | bit));
          }
        }
      }
    }
    memo_[key] = best;
    return best;
  }

  const RequestSequence& seq_;
  int64_t k_;
  std::vector<int64_t> step_start_;
  std::map<std::pair<int64_t, uint32_t>, int64_t> memo_;
};

// Fewest pure-eviction misses over every step-level schedule (evict_optimum.h): at each step
// choose any held set H within (previous held set + pages first requested now), |H| <= k.
// Enumerates every subset at every step (memoised on (step, held, seen)).
class EvictBruteForce {
 public:
  EvictBruteForce(const RequestSequence& seq, int64_t k) : seq_(seq), k_(k) {}
  int64_t Solve() { return Best(0, 0, 0); }

 private:
  int64_t Best(int64_t s, uint32_t held, uint32_t seen) {
    if (s == seq_.steps()) return 0;
    const auto key = std::make_tuple(s, held, seen);
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    uint32_t requested = 0;
    for (int64_t i = seq_.step_begin[s]; i < seq_.step_begin[s + 1]; ++i) {
      requested |= 1u << seq_.pages[i];
    }
    const uint32_t arrivals = requested & ~seen;
    const uint32_t candidates = held | arrivals;
    int64_t best = std::numeric_limits<int64_t>::max();
    // Every subset of `candidates`.
    for (uint32_t h = candidates;; h = (h - 1) & candidates) {
      if (std::popcount(h) <= k_) {
        const int64_t misses = std::popcount(requested & ~h);
        best = std::min(best, misses + Best(s + 1, h, seen | requested));
      }
      if (h == 0) break;
    }
    memo_[key] = best;
    return best;
  }

  const RequestSequence& seq_;
  int64_t k_;
  std::map<std::tuple<int64_t, uint32_t, uint32_t>, int64_t> memo_;
};

TEST(Belady, EqualsExhaustiveOptimumOnSmallRandomSequences) {
  int checked = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const int max_set = seed % 2 == 0 ? 1 : 3;  // single requests and set requests with pins
    const RequestSequence seq = RandomSequence(seed, 14, 7, max_set);
    for (int64_t k = 1; k <= 4; ++k) {
      const int64_t brute = OffloadBruteForce(seq, k).Solve();
      EXPECT_EQ(Faults(seq, "opt", k, Mode::kOffload), brute) << "seed=" << seed << " k=" << k;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 160);
}

TEST(Belady, NoPolicyBeatsIt) {
  const RequestSequence seq = RandomSequence(11, 400, 30, 3);
  for (int64_t k : {2, 5, 10, 20}) {
    const int64_t opt = Faults(seq, "opt", k, Mode::kOffload);
    for (const PolicyInfo& info : PagingPolicies()) {
      if (info.predictions != Predictions::kNone) continue;
      EXPECT_GE(Faults(seq, info.name, k, Mode::kOffload), opt) << info.name << " k=" << k;
    }
  }
}

TEST(EvictOptimum, MinCostFlowEqualsExhaustiveOptimum) {
  int checked = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const int max_set = 1 + static_cast<int>(seed % 3);
    const RequestSequence seq = RandomSequence(seed, 7, 6, max_set);
    const std::vector<int64_t> curve = EvictOptimumCurve(Densify(seq), 5);
    ASSERT_EQ(curve.size(), 6u);
    for (int64_t k = 0; k <= 5; ++k) {
      EXPECT_EQ(curve[k], EvictBruteForce(seq, k).Solve()) << "seed=" << seed << " k=" << k;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 240);
}

TEST(EvictOptimum, HandComputedIntervalChoice) {
  // k = 1. Page 1 is requested at steps 0, 1, 2, 3; page 2 at 0 and 4; page 3 at 1, 2, 3, 4.
  // Best: hold 1 for steps 0..1 (2 hits)... or hold 1 at 0..3 (4) then nothing new can enter.
  // Holding 3 from step 1 to 4 gives 1 (page 1 at step 0) + 4 = 5 hits of 10 requests.
  RequestSequence seq;
  seq.AddStep(0, std::vector<uint64_t>{1, 2});
  seq.AddStep(1, std::vector<uint64_t>{1, 3});
  seq.AddStep(2, std::vector<uint64_t>{1, 3});
  seq.AddStep(3, std::vector<uint64_t>{1, 3});
  seq.AddStep(4, std::vector<uint64_t>{2, 3});
  EXPECT_EQ(EvictOptimumCurve(Densify(seq), 1)[1], 10 - 5);
}

TEST(EvictOptimum, IsALowerBoundForEveryPolicyInEvictMode) {
  const RequestSequence seq = RandomSequence(21, 120, 25, 4);
  const std::vector<int64_t> curve = EvictOptimumCurve(Densify(seq), 12);
  for (int64_t k : {1, 4, 8, 12}) {
    for (const PolicyInfo& info : PagingPolicies()) {
      if (info.predictions != Predictions::kNone) continue;
      EXPECT_GE(Faults(seq, info.name, k, Mode::kEvict), curve[k]) << info.name << " k=" << k;
    }
  }
  for (size_t k = 1; k < curve.size(); ++k) EXPECT_LE(curve[k], curve[k - 1]);
}

// The adversary of the deterministic lower bound (Sleator-Tarjan): with k + 1 pages, always
// request the page Marker does not hold. Built by simulating a Marker of the same rules
// (admission order among unmarked pages) alongside.
std::vector<uint64_t> AdversaryAgainstMarker(int64_t k, int n) {
  std::vector<uint64_t> cache;  // admission order
  std::set<uint64_t> marked;
  std::vector<uint64_t> seq;
  for (int t = 0; t < n; ++t) {
    uint64_t request = 0;
    while (std::find(cache.begin(), cache.end(), request) != cache.end()) ++request;
    seq.push_back(request);
    if (static_cast<int64_t>(cache.size()) == k) {
      auto victim =
          std::find_if(cache.begin(), cache.end(), [&](uint64_t p) { return !marked.count(p); });
      if (victim == cache.end()) {
        marked.clear();
        victim = cache.begin();
      }
      marked.erase(*victim);
      cache.erase(victim);
    }
    cache.push_back(request);
    marked.insert(request);
  }
  return seq;
}

TEST(Marker, FaultsAtMostKTimesOptOnAdversarialSequences) {
  for (int64_t k : {2, 3, 5, 8}) {
    const RequestSequence seq = testing::SequenceOf(AdversaryAgainstMarker(k, 400));
    const int64_t marker = Faults(seq, "marker", k, Mode::kOffload);
    const int64_t opt = Faults(seq, "opt", k, Mode::kOffload);
    EXPECT_EQ(marker, 400) << "the adversary makes every request fault";
    EXPECT_LE(marker, k * opt) << "k=" << k;
    // Randomized Marker on the same (now oblivious) sequence: a marking algorithm too.
    EXPECT_LE(Faults(seq, "rmarker", k, Mode::kOffload, 3), k * opt) << "k=" << k;
  }
}

}  // namespace
}  // namespace kvsim::paging
