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

}  // namespace kvsim::paging
