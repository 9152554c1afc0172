#include "sim/kv_cache.h"

#include <algorithm>

#include "common/error.h"

namespace kvsim::sim {

const char* PrecisionTierName(PrecisionTier tier) {
  return tier == PrecisionTier::kFull ? "full" : "quantized";
}

KvCache::KvCache(int head_dim, int64_t max_positions)
    : head_dim_(head_dim),
      max_positions_(max_positions),
      keys_(max_positions, head_dim),
      values_(max_positions, head_dim),
      entries_(static_cast<size_t>(max_positions)),
      slot_of_(static_cast<size_t>(max_positions), -1) {
  KVSIM_ASSERT(head_dim > 0 && max_positions >= 0, "bad cache shape {} x {}", max_positions,
               head_dim);
}

int64_t KvCache::SlotOf(int64_t position) const {
  if (position < 0 || position >= max_positions_) return -1;
  return slot_of_[static_cast<size_t>(position)];
}

std::vector<int64_t> KvCache::SortedPositions() const {
  std::vector<int64_t> positions;
  positions.reserve(static_cast<size_t>(size_));
  for (const CacheEntry& e : entries()) positions.push_back(e.position);
  std::sort(positions.begin(), positions.end());
  return positions;
}

int64_t KvCache::CountTier(PrecisionTier tier) const {
  int64_t count = 0;
  for (const CacheEntry& e : entries()) count += e.tier == tier ? 1 : 0;
  return count;
}

void KvCache::Append(int64_t position, const float* key, const float* value) {
  KVSIM_ASSERT(position >= 0 && position < max_positions_, "position {} outside [0, {})", position,
               max_positions_);
  KVSIM_ASSERT(slot_of_[static_cast<size_t>(position)] < 0, "position {} is already resident",
               position);
  const int64_t slot = size_++;
  keys_.row(slot) = Eigen::Map<const Eigen::RowVectorXf>(key, head_dim_);
  values_.row(slot) = Eigen::Map<const Eigen::RowVectorXf>(value, head_dim_);
  entries_[static_cast<size_t>(slot)] = CacheEntry{position, PrecisionTier::kFull, 0};
  slot_of_[static_cast<size_t>(position)] = slot;
  peak_size_ = std::max(peak_size_, size_);
}

void KvCache::Apply(const EvictionDecision& decision) {
  for (const EntryRewrite& rewrite : decision.rewrites) {
    const int64_t slot = SlotOf(rewrite.position);
    KVSIM_ASSERT(slot >= 0, "rewrite of position {} which is not resident", rewrite.position);
    KVSIM_ASSERT(rewrite.key.size() == head_dim_ && rewrite.value.size() == head_dim_,
                 "rewrite of position {} has {}/{} values, expected {}", rewrite.position,
                 rewrite.key.size(), rewrite.value.size(), head_dim_);
    keys_.row(slot) = rewrite.key.transpose();
    values_.row(slot) = rewrite.value.transpose();
    entries_[static_cast<size_t>(slot)].merge_count += rewrite.merged_tokens;
    if (rewrite.tier) entries_[static_cast<size_t>(slot)].tier = *rewrite.tier;
  }
  for (const int64_t position : decision.victims) {
    KVSIM_ASSERT(SlotOf(position) >= 0, "victim position {} is not resident (or repeated)",
                 position);
    Remove(position);
  }
  KVSIM_ASSERT(!OverBudget(), "cache holds {} tokens after eviction, budget {} + slack {}", size_,
               budget_tokens_, slack_tokens_);
}

void KvCache::Remove(int64_t position) {
  const int64_t slot = slot_of_[static_cast<size_t>(position)];
  const int64_t last = size_ - 1;
  if (slot != last) {
    keys_.row(slot) = keys_.row(last);
    values_.row(slot) = values_.row(last);
    entries_[static_cast<size_t>(slot)] = entries_[static_cast<size_t>(last)];
    slot_of_[static_cast<size_t>(entries_[static_cast<size_t>(slot)].position)] = slot;
  }
  slot_of_[static_cast<size_t>(position)] = -1;
  --size_;
}

}  // namespace kvsim::sim
