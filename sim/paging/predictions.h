#pragma once
// One-bit predictions for "Paging with Succinct Predictions" (Antoniadis et al., ICML 2023; card
// memory-and-paging.md 6.5): oracle bits computed from the future, and seeded corruption.
#include <cstdint>
#include <span>
#include <vector>

#include "sim/paging/registry.h"
#include "sim/paging/request_sequence.h"

namespace kvsim::paging {

// Discard bits: bit i = 1 iff Belady (policy "opt", this engine, offload mode, `cache_size`)
// evicts page[i] before its next request (a bypassed request counts as evicted at once).
std::vector<uint8_t> OracleDiscardBits(const DenseRequests& requests, int64_t cache_size);

// Index of the first request of each phase (the first entry is 0 when there are requests). A
// phase is a maximal run of requests touching `cache_size` distinct pages; the next phase starts
// at the request of the (cache_size + 1)-th distinct page (the textbook boundary). Requires
// cache_size >= 1.
std::vector<int64_t> PhaseStarts(const DenseRequests& requests, int64_t cache_size);

// Phase bits: bit i = 1 iff page[i] is requested in the phase after the phase of request i.
std::vector<uint8_t> OraclePhaseBits(const DenseRequests& requests, int64_t cache_size);

// The oracle bits `kind` needs (empty for Predictions::kNone).
std::vector<uint8_t> OracleBits(Predictions kind,
                                const DenseRequests& requests,
                                int64_t cache_size);

// Seed of unit `index` under `base_seed` (splitmix64 of the pair): independent streams per
// (seed, stream) that do not depend on thread scheduling.
uint64_t DeriveSeed(uint64_t base_seed, uint64_t index);

// Error counts follow the paper (and the card): named after the bit the policy was given.
// For discard bits eta0 is a wrong "keep" (the page should have been discardable) and eta1 a
// wrong "discard" (the page should have been kept); the paper's lower bounds tie the k - 1 cost
// per error to eta0 and the cost of 1 to eta1 (sim/paging/README.md).
struct NoisyBits {
  std::vector<uint8_t> bits;
  int64_t eta0 = 0;  // bit 0 where the truth is 1
  int64_t eta1 = 0;  // bit 1 where the truth is 0
};
// Flips each bit independently with probability `error_rate`, drawing u_i ~ U[0,1) from
// mt19937_64(DeriveSeed(seed, stream_index)) and flipping iff u_i < error_rate. The same u_i are
// drawn whatever the rate, so a larger rate flips a superset of the bits (coupled sweeps).
NoisyBits CorruptBits(std::span<const uint8_t> truth,
                      double error_rate,
                      uint64_t seed,
                      uint64_t stream_index);

// Errors of each type separately: a true 1 becomes 0 (an eta0 error) iff u_i < eta0_rate, a
// true 0 becomes 1 (an eta1 error) iff u_i < eta1_rate, with the u_i of CorruptBits (same seed
// and stream: CorruptBitsByType(t, p, p, ...) == CorruptBits(t, p, ...), and rates are coupled
// per type as there).
NoisyBits CorruptBitsByType(std::span<const uint8_t> truth,
                            double eta0_rate,
                            double eta1_rate,
                            uint64_t seed,
                            uint64_t stream_index);

// Adversarial bits: `budget` errors placed by a fixed rule, deterministic (no seed). Written for
// the policy that follows the bits (discard-pred), whose weakness is a slot held by a page it was
// told to keep while the pages it was told to drop keep coming back:
//  1. wrong keeps: up to min(budget, cache_size - 1) of them, on the requests whose true bit is
//     the "discard" value, largest hold first: hold = (next request of the page, or the number of
//     requests if none) - index, ties by earlier index. Each leaves a page that nobody needs in a
//     slot the bits say to keep; k - 1 of them leave one slot for everything else (k of them
//     would make follow-the-bits' fallback evict them);
//  2. the rest of the budget as wrong discards, on the requests whose true bit is the "keep"
//     value and whose page is requested again, shortest reuse distance first (next request -
//     index), ties by earlier index: the pages it is told to drop are the ones requested again
//     soonest, each costing follow-the-bits a fault. Pages never requested again are left
//     alone (dropping them frees a slot), so fewer errors than `budget` may be placed; the
//     returned eta0/eta1 count those placed. (With a working set that fits in k slots but not
//     in the one left, follow-the-bits faults on every request while OPT does not: not robust.)
// For discard bits keep = 0 (wrong keep = an eta0 error, wrong discard = eta1); for phase bits
// keep = 1 ("requested next phase"; wrong keep = eta1, wrong discard = eta0). This is one
// strong, documented adversary, not the worst case over all bit vectors (that is a search over
// 2^n vectors); the marking policies' bound (k OPT) holds against any bits.
NoisyBits AdversarialBits(const DenseRequests& requests,
                          std::span<const uint8_t> truth,
                          uint8_t keep_bit,
                          int64_t cache_size,
                          int64_t budget);

// Least-squares line y = intercept + slope * x through the points (at least two distinct x;
// otherwise slope is NaN and intercept the mean of y).
struct LineFit {
  double slope = 0;
  double intercept = 0;
};
LineFit FitLine(std::span<const double> x, std::span<const double> y);

}  // namespace kvsim::paging
