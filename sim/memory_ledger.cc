#include "sim/memory_ledger.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <utility>

#include "common/error.h"

namespace kvsim::sim {
namespace {

// Calls visit(step, phase, total) once per distinct step, in step order, where total is the sum
// of the latest level of every (layer, category) selected by `keep` at that step.
template <typename Keep, typename Visit>
void ForEachStepTotal(std::span<const LedgerSample> samples, Keep keep, Visit visit) {
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return samples[a].step < samples[b].step; });
  std::map<std::pair<int, int>, int64_t> level;
  int64_t total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const LedgerSample& s = samples[order[i]];
    if (keep(s)) {
      int64_t& current = level[{s.layer, static_cast<int>(s.category)}];
      total += s.bytes - current;
      current = s.bytes;
    }
    const bool last_of_step = i + 1 == order.size() || samples[order[i + 1]].step != s.step;
    if (last_of_step) visit(s.step, s.phase, total);
  }
}

}  // namespace

const char* MemoryCategoryName(MemoryCategory category) {
  switch (category) {
    case MemoryCategory::kKvFull:
      return "kv_full";
    case MemoryCategory::kKvQuantized:
      return "kv_quantized";
    case MemoryCategory::kQuantMetadata:
      return "quant_metadata";
    case MemoryCategory::kPolicyState:
      return "policy_state";
    case MemoryCategory::kPrefillTransient:
      return "prefill_transient";
  }
  return "?";
}

const char* LedgerPhaseName(LedgerPhase phase) {
  return phase == LedgerPhase::kPrefill ? "prefill" : "decode";
}

void MemoryLedger::Record(
    int64_t step, LedgerPhase phase, int layer, MemoryCategory category, int64_t bytes) {
  KVSIM_ASSERT(bytes >= 0, "negative bytes {} for {}", bytes, MemoryCategoryName(category));
  samples_.push_back(LedgerSample{step, phase, category, layer, bytes});
}

void MemoryLedger::Merge(const MemoryLedger& other) {
  samples_.insert(samples_.end(), other.samples_.begin(), other.samples_.end());
}

MemoryPeak MemoryLedger::PeakBytes(int layer, uint32_t categories) const {
  MemoryPeak peak;
  ForEachStepTotal(
      samples_,
      [&](const LedgerSample& s) {
        return (layer == kAllLayers || s.layer == layer) && (categories & Bit(s.category)) != 0;
      },
      [&](int64_t step, LedgerPhase, int64_t total) {
        if (peak.step < 0 || total > peak.bytes) peak = {total, step};
      });
  return peak;
}

double MemoryLedger::MeanDecodeBytes(int layer, uint32_t categories) const {
  double sum = 0.0;
  int64_t count = 0;
  ForEachStepTotal(
      samples_,
      [&](const LedgerSample& s) {
        return (layer == kAllLayers || s.layer == layer) && (categories & Bit(s.category)) != 0;
      },
      [&](int64_t, LedgerPhase phase, int64_t total) {
        if (phase != LedgerPhase::kDecode) return;
        sum += static_cast<double>(total);
        ++count;
      });
  return count == 0 ? 0.0 : sum / static_cast<double>(count);
}

}  // namespace kvsim::sim
