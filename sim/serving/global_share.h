#pragma once
// share = "global" (sim/serving/README.md, Scheduler): the pool's rows go where the running
// sequences' own policies say the next kept token matters most. The scheduler stays count-only:
// it asks a SequenceScorer (the live replays of live_scores.h) for each sequence's value curve
// and divides the rows with AllocateRowsByValue.
#include <cstdint>
#include <span>
#include <vector>

namespace kvsim::serving {

// The scheduler's view of the running sequences' token scores.
class SequenceScorer {
 public:
  virtual ~SequenceScorer() = default;
  // Request `id`'s value curve (RowClaim::value) as its state stands now; false when it has no
  // state yet (before its first decode step).
  virtual bool Value(int64_t id, std::vector<double>& value) = 0;
  // Request `id` decodes position prompt_len + k with `budget` tokens (allowance - 1): its state
  // advances through the evict phase that budget caps (position prompt_len - 1 + k). Called once
  // per k, in order, after the iteration's shares are decided.
  virtual void Decode(int64_t id, int64_t k, int64_t budget) = 0;
  // Request `id` finished: its state is dropped.
  virtual void Done(int64_t id) = 0;
};

// One running sequence's claim on the pool's block rows.
struct RowClaim {
  // >= 0: the sequence takes exactly this many rows (no score yet: the equal share).
  int64_t fixed_rows = -1;
  int64_t min_rows = 0;  // otherwise: at least this many ...
  int64_t max_rows = 0;  // ... and at most this many
  // value[j]: what keeping its j-th most important resident token is worth (non-increasing;
  // 0 beyond the end). Slot 0 of its allowance is the incoming token, so allowance slot s holds
  // value[s - 1], and row r (slots [r b, (r + 1) b)) is worth the sum of those.
  std::vector<double> value = {};
};

// Rows per claim: fixed claims take theirs, the others their minimum, then the remaining rows go
// one at a time to the claim whose next row is worth most (ties: the claim with fewer rows, then
// the lower index), while a claim is below its maximum. REQUIRES the fixed rows and minima fit
// capacity_rows (asserted); the result never exceeds it. Values are non-increasing, so beyond
// row 0 (one slot short: the incoming token's) a claim's rows are worth less and less, and with
// min_rows >= 1 the greedy split maximises the total worth; among the splits of equal worth it
// is the most even one (leximin), rows that nobody values being filled level by level.
std::vector<int64_t> AllocateRowsByValue(int64_t capacity_rows,
                                         int64_t block_tokens,
                                         std::span<const RowClaim> claims);

}  // namespace kvsim::serving
