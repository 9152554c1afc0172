#pragma once
// Shared by the paging tests: random request sequences and a deliberately naive reference
// engine (O(k) scans over plain vectors) that re-implements the documented replay semantics
// (sim/paging/engine.h) independently of the library's data structures.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <set>
#include <vector>

#include "sim/paging/engine.h"
#include "sim/paging/request_sequence.h"

namespace kvsim::paging::testing {

// Zipf-like object ids (rank r -> 7 r + 3): ranks drawn with P(r) ~ 1 / r^alpha over `pages`.
inline std::vector<uint64_t> ZipfRequests(uint64_t seed, int n, int pages, double alpha) {
  std::mt19937_64 rng(seed);
  std::vector<double> weights(static_cast<size_t>(pages));
  for (int r = 0; r < pages; ++r) weights[static_cast<size_t>(r)] = 1.0 / std::pow(r + 1.0, alpha);
  std::discrete_distribution<int> rank(weights.begin(), weights.end());
  std::vector<uint64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint64_t>(rank(rng)) * 7 + 3);
  return out;
}

// `steps` steps, each requesting 1..max_set distinct pages of [0, num_pages), ascending.
inline RequestSequence RandomSequence(uint64_t seed, int steps, int num_pages, int max_set) {
  std::mt19937_64 rng(seed);
  RequestSequence seq;
  seq.page_bytes = 64;
  for (int s = 0; s < steps; ++s) {
    const int size = 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_set));
    std::set<uint64_t> pages;
    while (static_cast<int>(pages.size()) < std::min(size, num_pages)) {
      pages.insert(rng() % static_cast<uint64_t>(num_pages));
    }
    const std::vector<uint64_t> v(pages.begin(), pages.end());
    seq.AddStep(100 + s, v);
  }
  return seq;
}

// One request per step.
inline RequestSequence SequenceOf(const std::vector<uint64_t>& pages) {
  RequestSequence seq;
  seq.page_bytes = 64;
  for (size_t i = 0; i < pages.size(); ++i) {
    const uint64_t p = pages[i];
    seq.AddStep(static_cast<int64_t>(i), std::span<const uint64_t>(&p, 1));
  }
  return seq;
}

// What a reference policy sees when it must pick a victim.
struct NaiveState {
  std::vector<uint64_t> resident;  // in admission order
  std::vector<uint64_t> pinned;    // requested earlier in this step (resident)
  bool IsPinned(uint64_t p) const {
    return std::find(pinned.begin(), pinned.end(), p) != pinned.end();
  }
};

struct NaivePolicy {
  std::function<void(int64_t index, uint64_t page)> on_hit = [](int64_t, uint64_t) {};
  std::function<void(int64_t index, uint64_t page)> on_insert = [](int64_t, uint64_t) {};
  std::function<uint64_t(int64_t index, const NaiveState& state)> victim;
};

// Faults of `policy` under the documented semantics (pins, forced bypass, both modes).
inline int64_t NaiveReplay(const RequestSequence& seq, int64_t k, Mode mode, NaivePolicy policy) {
  NaiveState state;
  std::set<uint64_t> seen;
  int64_t faults = 0;
  for (int64_t s = 0; s < seq.steps(); ++s) {
    state.pinned.clear();
    for (int64_t i = seq.step_begin[s]; i < seq.step_begin[s + 1]; ++i) {
      const uint64_t p = seq.pages[i];
      const bool first = seen.insert(p).second;
      const bool resident =
          std::find(state.resident.begin(), state.resident.end(), p) != state.resident.end();
      if (resident) {
        policy.on_hit(i, p);
        state.pinned.push_back(p);
        continue;
      }
      ++faults;
      if (mode == Mode::kEvict && first) --faults;   // arrivals are free unless bypassed
      if (mode == Mode::kEvict && !first) continue;  // lost for good
      if (static_cast<int64_t>(state.resident.size()) == k) {
        if (static_cast<int64_t>(state.pinned.size()) == k) {
          if (mode == Mode::kEvict) ++faults;
          continue;
        }
        const uint64_t v = policy.victim(i, state);
        EXPECT_FALSE(state.IsPinned(v));
        state.resident.erase(std::find(state.resident.begin(), state.resident.end(), v));
      }
      state.resident.push_back(p);
      state.pinned.push_back(p);
      policy.on_insert(i, p);
    }
  }
  return faults;
}

}  // namespace kvsim::paging::testing
