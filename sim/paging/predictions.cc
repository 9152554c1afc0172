#include "sim/paging/predictions.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/error.h"

namespace kvsim::paging {

std::vector<uint8_t> OracleDiscardBits(const DenseRequests& requests, int64_t cache_size) {
  std::vector<EvictionEvent> evictions;
  auto belady = MakePagingPolicy("opt");
  Replay(requests, *belady,
         {.cache_size = cache_size, .mode = Mode::kOffload, .seed = 0, .bits = {}}, &evictions);
  std::vector<uint8_t> bits(requests.page.size(), 0);
  std::vector<int64_t> last_request(requests.num_pages(), -1);
  size_t e = 0;
  for (int64_t i = 0; i < requests.requests(); ++i) {
    const uint32_t p = requests.page[static_cast<size_t>(i)];
    for (; e < evictions.size() && evictions[e].index == i; ++e) {
      const uint32_t victim = evictions[e].page;
      const int64_t latest = victim == p ? i : last_request[victim];
      KVSIM_ASSERT(latest >= 0, "Belady evicted page {} before requesting it", victim);
      bits[static_cast<size_t>(latest)] = 1;
    }
    last_request[p] = i;
  }
  return bits;
}

std::vector<int64_t> PhaseStarts(const DenseRequests& requests, int64_t cache_size) {
  KVSIM_ASSERT(cache_size >= 1, "phases need a cache of at least one page");
  std::vector<int64_t> starts;
  std::vector<int64_t> seen_in(requests.num_pages(), -1);
  int64_t distinct = 0;
  for (int64_t i = 0; i < requests.requests(); ++i) {
    const uint32_t p = requests.page[static_cast<size_t>(i)];
    const auto phase = static_cast<int64_t>(starts.size()) - 1;
    if (phase >= 0 && seen_in[p] == phase) continue;
    if (phase < 0 || distinct == cache_size) {
      starts.push_back(i);
      distinct = 0;
    }
    seen_in[p] = static_cast<int64_t>(starts.size()) - 1;
    ++distinct;
  }
  return starts;
}

std::vector<uint8_t> OraclePhaseBits(const DenseRequests& requests, int64_t cache_size) {
  const std::vector<int64_t> starts = PhaseStarts(requests, cache_size);
  const auto n = static_cast<size_t>(requests.requests());
  std::vector<int64_t> phase_of(n);
  for (size_t ph = 0; ph < starts.size(); ++ph) {
    const auto end = ph + 1 < starts.size() ? static_cast<size_t>(starts[ph + 1]) : n;
    for (auto i = static_cast<size_t>(starts[ph]); i < end; ++i) {
      phase_of[i] = static_cast<int64_t>(ph);
    }
  }
  // later_phase[i]: phase of the first request of page[i] after request i's phase, or -1.
  std::vector<int64_t> later_phase(n, -1);
  std::vector<uint8_t> bits(n, 0);
  for (size_t i = n; i-- > 0;) {
    const int64_t next = requests.next_use[i];
    if (next != kNeverAgain) {
      const auto j = static_cast<size_t>(next);
      later_phase[i] = phase_of[j] == phase_of[i] ? later_phase[j] : phase_of[j];
    }
    bits[i] = later_phase[i] == phase_of[i] + 1 ? 1 : 0;
  }
  return bits;
}

std::vector<uint8_t> OracleBits(Predictions kind,
                                const DenseRequests& requests,
                                int64_t cache_size) {
  switch (kind) {
    case Predictions::kNone:
      return {};
    case Predictions::kDiscard:
      return OracleDiscardBits(requests, cache_size);
    case Predictions::kPhase:
      return OraclePhaseBits(requests, cache_size);
  }
  KVSIM_ASSERT(false, "unknown prediction kind");
}

uint64_t DeriveSeed(uint64_t base_seed, uint64_t index) {
  uint64_t z = base_seed + 0x9e3779b97f4a7c15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

NoisyBits CorruptBitsByType(std::span<const uint8_t> truth,
                            double eta0_rate,
                            double eta1_rate,
                            uint64_t seed,
                            uint64_t stream_index) {
  std::mt19937_64 rng(DeriveSeed(seed, stream_index));
  NoisyBits out;
  out.bits.resize(truth.size());
  for (size_t i = 0; i < truth.size(); ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const double rate = truth[i] ? eta0_rate : eta1_rate;
    const uint8_t bit = u < rate ? static_cast<uint8_t>(1 - truth[i]) : truth[i];
    out.bits[i] = bit;
    if (bit != truth[i]) ++(bit == 0 ? out.eta0 : out.eta1);
  }
  return out;
}

NoisyBits CorruptBits(std::span<const uint8_t> truth,
                      double error_rate,
                      uint64_t seed,
                      uint64_t stream_index) {
  return CorruptBitsByType(truth, error_rate, error_rate, seed, stream_index);
}

NoisyBits AdversarialBits(const DenseRequests& requests,
                          std::span<const uint8_t> truth,
                          uint8_t keep_bit,
                          int64_t cache_size,
                          int64_t budget) {
  KVSIM_ASSERT(static_cast<int64_t>(truth.size()) == requests.requests(), "{} bits for {} requests",
               truth.size(), requests.requests());
  KVSIM_ASSERT(keep_bit <= 1 && budget >= 0, "bad adversary arguments");
  const int64_t n = requests.requests();
  auto next_of = [&](size_t i) {
    const int64_t next = requests.next_use[i];
    return next == kNeverAgain ? n : next;
  };
  const auto discard_bit = static_cast<uint8_t>(1 - keep_bit);
  std::vector<int64_t> wrong_keep, wrong_discard;  // candidate request indices
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] == discard_bit) {
      wrong_keep.push_back(static_cast<int64_t>(i));
    } else if (requests.next_use[i] != kNeverAgain) {
      // Dropping a page nobody requests again frees a slot: no help to an adversary.
      wrong_discard.push_back(static_cast<int64_t>(i));
    }
  }
  // Largest hold first; stable sorts keep earlier indices first among ties.
  std::stable_sort(wrong_keep.begin(), wrong_keep.end(), [&](int64_t a, int64_t b) {
    return next_of(static_cast<size_t>(a)) - a > next_of(static_cast<size_t>(b)) - b;
  });
  // Shortest reuse distance first.
  auto reuse = [&](int64_t i) { return requests.next_use[static_cast<size_t>(i)] - i; };
  std::stable_sort(wrong_discard.begin(), wrong_discard.end(),
                   [&](int64_t a, int64_t b) { return reuse(a) < reuse(b); });
  NoisyBits out;
  out.bits.assign(truth.begin(), truth.end());
  const int64_t keeps = std::min(
      {budget, std::max<int64_t>(cache_size - 1, 0), static_cast<int64_t>(wrong_keep.size())});
  for (int64_t j = 0; j < keeps; ++j) out.bits[static_cast<size_t>(wrong_keep[j])] = keep_bit;
  const int64_t drops = std::min(budget - keeps, static_cast<int64_t>(wrong_discard.size()));
  for (int64_t j = 0; j < drops; ++j) {
    out.bits[static_cast<size_t>(wrong_discard[j])] = discard_bit;
  }
  for (size_t i = 0; i < truth.size(); ++i) {
    if (out.bits[i] != truth[i]) ++(out.bits[i] == 0 ? out.eta0 : out.eta1);
  }
  return out;
}

LineFit FitLine(std::span<const double> x, std::span<const double> y) {
  KVSIM_ASSERT(x.size() == y.size(), "FitLine: {} x for {} y", x.size(), y.size());
  LineFit fit;
  if (x.empty()) return {std::nan(""), std::nan("")};
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(x.size());
  my /= static_cast<double>(x.size());
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  if (sxx == 0) return {std::nan(""), my};
  fit.slope = sxy / sxx;
  fit.intercept = my - fit.slope * mx;
  return fit;
}

}  // namespace kvsim::paging
