// `--semantics classic` (issue 16): a step's requests served one after another, no pinning, no
// bypass, as a sequential cache simulator counts them. Checked against a textbook simulator
// written here over the flat request list (LRU, FIFO, Belady's farthest next use), on random
// set-request sequences where the step semantics does pin and bypass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <list>
#include <string>
#include <vector>

#include "sim/paging/experiment.h"
#include "sim/paging/registry.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

std::vector<uint64_t> Flat(const RequestSequence& seq) { return seq.pages; }

// A textbook cache of k pages: LRU, FIFO or Belady (farthest next use; ties: lowest page id).
int64_t TextbookFaults(const std::vector<uint64_t>& requests, const std::string& rule, int64_t k) {
  std::list<uint64_t> order;  // LRU: most recent first; FIFO: newest first
  int64_t faults = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const uint64_t p = requests[i];
    const auto it = std::find(order.begin(), order.end(), p);
    if (it != order.end()) {
      if (rule == "lru") order.splice(order.begin(), order, it);
      continue;
    }
    ++faults;
    if (k == 0) continue;
    if (static_cast<int64_t>(order.size()) == k) {
      if (rule == "opt") {
        auto victim = order.begin();
        size_t victim_next = 0;
        for (auto c = order.begin(); c != order.end(); ++c) {
          size_t next = i + 1;
          while (next < requests.size() && requests[next] != *c) ++next;
          if (next > victim_next || (next == victim_next && *c < *victim)) {
            victim = c;
            victim_next = next;
          }
        }
        order.erase(victim);
      } else {
        order.pop_back();
      }
    }
    order.push_front(p);
  }
  return faults;
}

ReplayResult ReplayWith(const DenseRequests& dense, const std::string& name, int64_t k) {
  auto policy = MakePagingPolicy(name);
  return Replay(dense, *policy, {.cache_size = k, .mode = Mode::kOffload, .seed = 0, .bits = {}});
}

TEST(ClassicSemantics, EqualsATextbookSequentialCache) {
  for (const uint64_t seed : {1u, 2u, 3u}) {
    const RequestSequence seq = testing::RandomSequence(seed, 120, 24, 6);
    const DenseRequests classic = OneRequestPerStep(Densify(seq));
    ASSERT_EQ(classic.steps(), classic.requests());
    for (const std::string name : {"lru", "fifo", "opt"}) {
      for (int64_t k = 1; k <= 16; ++k) {
        SCOPED_TRACE(name + " k=" + std::to_string(k) + " seed=" + std::to_string(seed));
        const ReplayResult r = ReplayWith(classic, name, k);
        EXPECT_EQ(r.bypasses, 0);
        EXPECT_EQ(r.faults, TextbookFaults(Flat(seq), name, k));
      }
    }
  }
}

TEST(ClassicSemantics, DiffersFromStepSemanticsWherePinsBind) {
  const RequestSequence seq = testing::RandomSequence(7, 200, 24, 6);
  const DenseRequests step = Densify(seq);
  const DenseRequests classic = OneRequestPerStep(step);
  // At k = 3 a step of up to 6 pages fills the cache with pinned pages: the step semantics
  // bypasses; the classic one evicts a page the step used (and may fault on it again).
  const ReplayResult pinned = ReplayWith(step, "lru", 3);
  const ReplayResult sequential = ReplayWith(classic, "lru", 3);
  EXPECT_GT(pinned.bypasses, 0);
  EXPECT_EQ(sequential.bypasses, 0);
  EXPECT_NE(pinned.faults, sequential.faults);
  EXPECT_EQ(ParseSemantics("classic", "x"), Semantics::kClassic);
  EXPECT_STREQ(SemanticsName(Semantics::kStep), "step");
}

}  // namespace
}  // namespace kvsim::paging
