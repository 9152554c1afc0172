#include "sim/serving/global_share.h"

#include <algorithm>
#include <queue>
#include <tuple>

#include "common/error.h"

namespace kvsim::serving {
namespace {

// Sum of value[j] for j in [begin, end), clamped to the curve (0 beyond it).
double Worth(const std::vector<double>& prefix, int64_t begin, int64_t end) {
  const auto size = static_cast<int64_t>(prefix.size()) - 1;
  begin = std::clamp<int64_t>(begin, 0, size);
  end = std::clamp<int64_t>(end, 0, size);
  return end > begin ? prefix[static_cast<size_t>(end)] - prefix[static_cast<size_t>(begin)] : 0.0;
}

}  // namespace

std::vector<int64_t> AllocateRowsByValue(int64_t capacity_rows,
                                         int64_t block_tokens,
                                         std::span<const RowClaim> claims) {
  std::vector<int64_t> rows(claims.size(), 0);
  std::vector<std::vector<double>> prefix(claims.size());
  int64_t left = capacity_rows;
  for (size_t i = 0; i < claims.size(); ++i) {
    const RowClaim& c = claims[i];
    rows[i] = c.fixed_rows >= 0 ? c.fixed_rows : std::min(c.min_rows, c.max_rows);
    left -= rows[i];
    prefix[i].assign(1, 0.0);
    for (const double v : c.value) prefix[i].push_back(prefix[i].back() + v);
  }
  KVSIM_ASSERT(left >= 0, "global share: {} rows do not cover the fixed shares and minima",
               capacity_rows);
  // Row r of claim i covers allowance slots [r b, (r + 1) b), i.e. value[r b - 1, (r + 1) b - 1).
  const auto next_worth = [&](size_t i) {
    return Worth(prefix[i], rows[i] * block_tokens - 1, (rows[i] + 1) * block_tokens - 1);
  };
  // Highest worth first; among equal worths the claim with fewer rows, then the lower index. Rows
  // that no curve values (room for tokens still to come, after a departure) are thus spread
  // evenly instead of all going to the first arrival, whose squeezed neighbours could otherwise
  // never grow again.
  using Entry = std::tuple<double, int64_t, int64_t>;  // worth, -rows, -index
  std::priority_queue<Entry> queue;
  const auto push = [&](size_t i) {
    queue.emplace(next_worth(i), -rows[i], -static_cast<int64_t>(i));
  };
  for (size_t i = 0; i < claims.size(); ++i) {
    if (claims[i].fixed_rows < 0 && rows[i] < claims[i].max_rows) push(i);
  }
  while (left > 0 && !queue.empty()) {
    const auto i = static_cast<size_t>(-std::get<2>(queue.top()));
    queue.pop();
    ++rows[i];
    --left;
    if (rows[i] < claims[i].max_rows) push(i);
  }
  return rows;
}

}  // namespace kvsim::serving
