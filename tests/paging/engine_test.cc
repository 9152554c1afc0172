// The engine with each classical policy against independent naive re-implementations
// (tests/paging/paging_test_util.h), on random set-request sequences, in both modes.
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "common/error.h"
#include "sim/paging/registry.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

using testing::NaivePolicy;
using testing::NaiveReplay;
using testing::NaiveState;
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

// Victim = the unpinned resident page minimising `key(page)`.
template <typename Key>
uint64_t ArgMinUnpinned(const NaiveState& state, Key key) {
  uint64_t best = 0;
  bool found = false;
  for (uint64_t p : state.resident) {
    if (state.IsPinned(p)) continue;
    if (!found || key(p) < key(best)) {
      best = p;
      found = true;
    }
  }
  EXPECT_TRUE(found);
  return best;
}

NaivePolicy NaiveLru() {
  auto last = std::make_shared<std::map<uint64_t, int64_t>>();
  NaivePolicy p;
  p.on_hit = [last](int64_t i, uint64_t page) { (*last)[page] = i; };
  p.on_insert = p.on_hit;
  p.victim = [last](int64_t, const NaiveState& s) {
    return ArgMinUnpinned(s, [&](uint64_t page) { return last->at(page); });
  };
  return p;
}

NaivePolicy NaiveFifo() {
  auto admitted = std::make_shared<std::map<uint64_t, int64_t>>();
  NaivePolicy p;
  p.on_insert = [admitted](int64_t i, uint64_t page) { (*admitted)[page] = i; };
  p.victim = [admitted](int64_t, const NaiveState& s) {
    return ArgMinUnpinned(s, [&](uint64_t page) { return admitted->at(page); });
  };
  return p;
}

NaivePolicy NaiveLfu() {
  auto key = std::make_shared<std::map<uint64_t, std::pair<int64_t, int64_t>>>();
  NaivePolicy p;
  p.on_hit = [key](int64_t i, uint64_t page) { (*key)[page] = {(*key)[page].first + 1, i}; };
  p.on_insert = [key](int64_t i, uint64_t page) { (*key)[page] = {1, i}; };
  p.victim = [key](int64_t, const NaiveState& s) {
    return ArgMinUnpinned(s, [&](uint64_t page) { return key->at(page); });
  };
  return p;
}

// CLOCK as a ring of k slots (textbook second chance with the documented pin rule).
NaivePolicy NaiveClock(int64_t k) {
  struct Ring {
    std::vector<uint64_t> slot;
    std::map<uint64_t, bool> ref;
    size_t hand = 0;
    int64_t hole = -1;
  };
  auto ring = std::make_shared<Ring>();
  NaivePolicy p;
  p.on_hit = [ring](int64_t, uint64_t page) { ring->ref[page] = true; };
  p.on_insert = [ring, k](int64_t, uint64_t page) {
    ring->ref[page] = false;
    if (ring->hole < 0) {
      ring->slot.push_back(page);
      return;
    }
    ring->slot[static_cast<size_t>(ring->hole)] = page;
    ring->hand = (static_cast<size_t>(ring->hole) + 1) % static_cast<size_t>(k);
    ring->hole = -1;
  };
  p.victim = [ring, k](int64_t, const NaiveState& s) {
    for (;;) {
      const uint64_t page = ring->slot[ring->hand];
      if (!s.IsPinned(page)) {
        if (!ring->ref[page]) {
          ring->hole = static_cast<int64_t>(ring->hand);
          return page;
        }
        ring->ref[page] = false;
      }
      ring->hand = (ring->hand + 1) % static_cast<size_t>(k);
    }
  };
  return p;
}

// Marker: earliest-admitted unmarked page; a new phase unmarks every unpinned resident page.
NaivePolicy NaiveMarker() {
  auto marked = std::make_shared<std::set<uint64_t>>();
  NaivePolicy p;
  p.on_hit = [marked](int64_t, uint64_t page) { marked->insert(page); };
  p.on_insert = p.on_hit;
  p.victim = [marked](int64_t, const NaiveState& s) {
    auto unmarked = [&] {
      for (uint64_t page : s.resident) {  // admission order
        if (!marked->count(page)) return static_cast<int64_t>(page);
      }
      return int64_t{-1};
    };
    if (unmarked() < 0) {
      marked->clear();
      for (uint64_t page : s.pinned) marked->insert(page);
    }
    const int64_t v = unmarked();
    EXPECT_GE(v, 0);
    marked->erase(static_cast<uint64_t>(v));
    return static_cast<uint64_t>(v);
  };
  return p;
}

struct Case {
  const char* name;
  std::function<NaivePolicy(int64_t k)> make;
};

TEST(PagingEngine, ClassicalPoliciesMatchNaiveReimplementations) {
  const std::vector<Case> cases = {
      {"lru", [](int64_t) { return NaiveLru(); }},
      {"fifo", [](int64_t) { return NaiveFifo(); }},
      {"lfu", [](int64_t) { return NaiveLfu(); }},
      {"clock", [](int64_t k) { return NaiveClock(k); }},
      {"marker", [](int64_t) { return NaiveMarker(); }},
  };
  int compared = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    // Half the sequences have one request per step, half have set steps (pins, bypasses).
    const int max_set = seed % 2 == 0 ? 1 : 4;
    const RequestSequence seq = RandomSequence(seed, 300, 12, max_set);
    for (int64_t k : {1, 2, 3, 5, 8}) {
      for (Mode mode : {Mode::kOffload, Mode::kEvict}) {
        for (const Case& c : cases) {
          const int64_t expected = NaiveReplay(seq, k, mode, c.make(k));
          EXPECT_EQ(Faults(seq, c.name, k, mode), expected)
              << c.name << " k=" << k << " mode=" << ModeName(mode) << " seed=" << seed;
          ++compared;
        }
      }
    }
  }
  EXPECT_EQ(compared, 12 * 5 * 2 * 5);
}

TEST(PagingEngine, LruHandComputedExample) {
  // k = 3: 1 2 3 1 4 (evicts 2) 2 (evicts 3) 5 (evicts 1) -> 6 faults; FIFO evicts 1 at 4.
  const RequestSequence seq = testing::SequenceOf({1, 2, 3, 1, 4, 2, 5});
  EXPECT_EQ(Faults(seq, "lru", 3, Mode::kOffload), 6);
  // FIFO: 1 2 3 | 1 hit | 4 evicts 1 | 2 hit | 5 evicts 2 -> 5 faults.
  EXPECT_EQ(Faults(seq, "fifo", 3, Mode::kOffload), 5);
  // Pure eviction, LRU: 4 evicts 2 (lost), 2 -> miss, 5 evicts 3: misses = 1 (the lost 2).
  EXPECT_EQ(Faults(seq, "lru", 3, Mode::kEvict), 1);
}

TEST(PagingEngine, StepsLargerThanTheCacheBypassTheSameWayForEveryPolicy) {
  // Every step requests 4 pages with k = 2: the last 2 of each step are forced bypasses.
  RequestSequence seq;
  for (int s = 0; s < 10; ++s) {
    const std::vector<uint64_t> pages = {static_cast<uint64_t>(s), 20ULL + s % 3, 40, 50};
    seq.AddStep(s, pages);
  }
  const DenseRequests dense = Densify(seq);
  for (const PolicyInfo& info : PagingPolicies()) {
    if (info.predictions != Predictions::kNone) continue;
    auto policy = MakePagingPolicy(info.name);
    ReplayOptions options;
    options.cache_size = 2;
    const ReplayResult r = Replay(dense, *policy, options);
    EXPECT_EQ(r.bypasses, 20) << info.name;
    EXPECT_EQ(r.faults, 40) << info.name;  // first two pages of each step are never resident
  }
}

TEST(PagingEngine, ZeroCacheFaultsOnEveryRequest) {
  const RequestSequence seq = RandomSequence(3, 50, 6, 3);
  for (Mode mode : {Mode::kOffload, Mode::kEvict}) {
    EXPECT_EQ(Faults(seq, "lru", 0, mode), seq.requests());
  }
}

TEST(PagingEngine, RandomMarkerIsReproducibleAndSeedDependent) {
  const RequestSequence seq = RandomSequence(5, 2000, 40, 1);
  const int64_t a = Faults(seq, "rmarker", 10, Mode::kOffload, 7);
  EXPECT_EQ(a, Faults(seq, "rmarker", 10, Mode::kOffload, 7));
  bool differs = false;
  for (uint64_t seed = 8; seed < 16; ++seed) {
    differs |= Faults(seq, "rmarker", 10, Mode::kOffload, seed) != a;
  }
  EXPECT_TRUE(differs);
}

TEST(PagingEngine, UnknownPolicyNamesTheKnownOnes) {
  try {
    MakePagingPolicy("lruu");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'lruu'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("phase-pred"), std::string::npos);
  }
}

}  // namespace
}  // namespace kvsim::paging
