#pragma once
// A brute-force reference for AllocateRowsByValue (sim/serving/global_share.h), written from its
// definition independently of the greedy.
#include <algorithm>
#include <vector>

#include "sim/serving/global_share.h"

namespace kvsim::serving {

using kvsim::testing::TempDir;

// The worth of `rows` rows of a claim, slot by slot: allowance slot s holds value[s - 1] (slot 0
// is the incoming token).
inline double TotalWorth(const RowClaim& c, int64_t rows, int64_t b) {
  double sum = 0.0;
  for (int64_t s = 1; s < rows * b; ++s) {
    if (s - 1 < static_cast<int64_t>(c.value.size())) sum += c.value[static_cast<size_t>(s - 1)];
  }
  return sum;
}

// Every allocation within the claims' bounds and the capacity; the best total worth; among equal
// worths the most even (the rows sorted ascending, lexicographically largest: leximin), then the
// lexicographically largest in claim order (the lower index first).
inline std::vector<int64_t> BruteForce(int64_t capacity,
                                       int64_t b,
                                       const std::vector<RowClaim>& claims) {
  std::vector<int64_t> best, rows(claims.size());
  double best_worth = -1.0;
  const auto visit = [&](auto&& self, size_t i, int64_t left) -> void {
    if (i == claims.size()) {
      double worth = 0.0;
      for (size_t j = 0; j < claims.size(); ++j) worth += TotalWorth(claims[j], rows[j], b);
      const auto sorted = [](std::vector<int64_t> v) {
        std::sort(v.begin(), v.end());
        return v;
      };
      const bool tie = worth > best_worth - 1e-12 && worth < best_worth + 1e-12;
      if (worth > best_worth + 1e-12 ||
          (tie && (sorted(rows) > sorted(best) || (sorted(rows) == sorted(best) && rows > best)))) {
        best_worth = std::max(best_worth, worth);
        best = rows;
      }
      return;
    }
    const RowClaim& c = claims[i];
    const int64_t lo = c.fixed_rows >= 0 ? c.fixed_rows : std::min(c.min_rows, c.max_rows);
    const int64_t hi = c.fixed_rows >= 0 ? c.fixed_rows : c.max_rows;
    for (int64_t r = lo; r <= std::min(hi, left); ++r) {
      rows[i] = r;
      self(self, i + 1, left - r);
    }
  };
  visit(visit, 0, capacity);
  return best;
}

// Blocks of 4 tokens. A: one token carries 0.7 of the mass; B: 20 tokens of 0.05. Each gets its
// minimum row first (slots 1-3: A 0.9, B 0.15); the 6 others by worth: B's rows 1-4 (0.2 each:
// value[3, 7) ... [15, 19)), A's row 1 (value[3, 5): 0.1), B's row 5 (value[19]: 0.05). An
// equal split would be 4 and 4.
}  // namespace kvsim::serving
