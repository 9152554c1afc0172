#pragma once
// Bytes held by the simulated KV memory, by category and layer, over simulated time, with the
// peak and when it happened. One ledger per replayed layer (so layers replay in parallel), merged
// in layer order afterwards. Categories and their CSV names follow analysis/RESULTS_FORMAT.md
// (memory.csv).
#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace kvsim::sim {

enum class MemoryCategory : uint8_t {
  kKvFull = 0,        // full-precision K/V of resident entries
  kKvQuantized,       // quantized K/V payload (KIVI, MiKV)
  kQuantMetadata,     // scales / zero points of quantized entries
  kPolicyState,       // policy bookkeeping: scores, windows of queries, ...
  kPrefillTransient,  // buffers alive only during prefill
};
inline constexpr int kNumMemoryCategories = 5;
const char* MemoryCategoryName(MemoryCategory category);  // "kv_full", ...

enum class LedgerPhase : uint8_t { kPrefill, kDecode };
const char* LedgerPhaseName(LedgerPhase phase);  // "prefill" / "decode"

// One memory.csv row: the level of one category in one layer after the event at `step`.
struct LedgerSample {
  int64_t step = 0;
  LedgerPhase phase = LedgerPhase::kPrefill;
  MemoryCategory category = MemoryCategory::kKvFull;
  int layer = 0;
  int64_t bytes = 0;
};

struct MemoryPeak {
  int64_t bytes = 0;
  int64_t step = -1;  // step of the first sample reaching the peak; -1 if nothing was recorded
};

class MemoryLedger {
 public:
  MemoryLedger() = default;
  // A ledger holding `samples` as recorded (a round trip of samples()).
  explicit MemoryLedger(std::vector<LedgerSample> samples) : samples_(std::move(samples)) {}
  // Records that `category` of `layer` holds `bytes` after the event at `step`. Steps must not
  // decrease per (layer, category).
  void Record(int64_t step, LedgerPhase phase, int layer, MemoryCategory category, int64_t bytes);
  // Appends every sample of `other` (a ledger of other layers) after this one's.
  void Merge(const MemoryLedger& other);

  std::span<const LedgerSample> samples() const { return samples_; }

  // Category sets for the queries below: a bit per MemoryCategory.
  static constexpr uint32_t Bit(MemoryCategory c) { return 1u << static_cast<unsigned>(c); }
  static constexpr uint32_t kKvCategories = (1u << 0) | (1u << 1) | (1u << 2);  // payload+meta
  static constexpr uint32_t kAllCategories = (1u << kNumMemoryCategories) - 1;
  static constexpr int kAllLayers = -1;

  // Peak over time of the sum of the selected categories over `layer` (or every layer), each
  // (layer, category) holding its latest recorded level at each step.
  MemoryPeak PeakBytes(int layer, uint32_t categories) const;
  // Mean of the same sum over the steps that have decode-phase samples; 0 if none.
  double MeanDecodeBytes(int layer, uint32_t categories) const;

 private:
  std::vector<LedgerSample> samples_;
};

}  // namespace kvsim::sim
