#include "sim/kv_cache.h"

#include <algorithm>
#include <limits>

#include "common/error.h"

namespace kvsim::sim {

const char* PrecisionTierName(PrecisionTier tier) {
  return tier == PrecisionTier::kFull ? "full" : "quantized";
}

KvCache::KvCache(int head_dim, int64_t max_positions)
    : head_dim_(head_dim),
      max_positions_(max_positions),
      slot_of_(static_cast<size_t>(std::max<int64_t>(max_positions, 0)), -1) {
  KVSIM_ASSERT(
      head_dim > 0 && max_positions >= 0 && max_positions < std::numeric_limits<int32_t>::max(),
      "bad cache shape {} x {}", max_positions, head_dim);
}

KvCache::KvCache(ConstMatrixMap source_keys, ConstMatrixMap source_values)
    : KvCache(static_cast<int>(source_keys.cols()), source_keys.rows()) {
  KVSIM_ASSERT(
      source_values.rows() == source_keys.rows() && source_values.cols() == source_keys.cols(),
      "source keys {}x{} and values {}x{} differ", source_keys.rows(), source_keys.cols(),
      source_values.rows(), source_values.cols());
  source_keys_ = source_keys.data();
  source_values_ = source_values.data();
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

float* KvCache::OwnedRow(int32_t row, bool value) const {
  const auto& chunks = value ? owned_value_chunks_ : owned_key_chunks_;
  return chunks[static_cast<size_t>(row / kOwnedChunkRows)].get() +
         static_cast<size_t>(row % kOwnedChunkRows) * static_cast<size_t>(head_dim_);
}

uint8_t* KvCache::EncodedRow(int32_t row) const {
  return encoded_chunks_[static_cast<size_t>(row / kOwnedChunkRows)].get() +
         static_cast<size_t>(row % kOwnedChunkRows) * static_cast<size_t>(encoded_bytes_);
}

const float* KvCache::RowData(int64_t slot, bool value) const {
  const RowRef& row = rows_[static_cast<size_t>(slot)];
  switch (row.kind) {
    case RowKind::kFloat:
      return OwnedRow(row.index, value);
    case RowKind::kEncoded: {
      std::vector<float>& out = value ? decoded_value_ : decoded_key_;
      out.resize(static_cast<size_t>(head_dim_));
      encoded_codec_[static_cast<size_t>(row.index)]->Decode(EncodedRow(row.index), value,
                                                             out.data());
      return out.data();
    }
    case RowKind::kSource:
      break;
  }
  const auto position = static_cast<size_t>(entries_[static_cast<size_t>(slot)].position);
  return (value ? source_values_ : source_keys_) + position * static_cast<size_t>(head_dim_);
}

RowMatrixXf KvCache::Gather(bool value) const {
  RowMatrixXf rows(size_, head_dim_);
  for (int64_t slot = 0; slot < size_; ++slot) {
    rows.row(slot) = Eigen::Map<const Eigen::RowVectorXf>(RowData(slot, value), head_dim_);
  }
  return rows;
}

int32_t KvCache::NewOwnedRow() {
  if (!free_owned_.empty()) {
    const int32_t row = free_owned_.back();
    free_owned_.pop_back();
    return row;
  }
  if (owned_rows_ % kOwnedChunkRows == 0) {
    const auto chunk_floats = static_cast<size_t>(kOwnedChunkRows) * static_cast<size_t>(head_dim_);
    owned_key_chunks_.push_back(std::make_unique_for_overwrite<float[]>(chunk_floats));
    owned_value_chunks_.push_back(std::make_unique_for_overwrite<float[]>(chunk_floats));
  }
  return owned_rows_++;
}

int32_t KvCache::NewEncodedRow(const RowCodec* codec) {
  const int64_t bytes = codec->EncodedBytes();
  KVSIM_ASSERT(bytes > 0 && (encoded_bytes_ == 0 || bytes == encoded_bytes_),
               "encoded entries of {} bytes in a cache of {}-byte entries", bytes, encoded_bytes_);
  encoded_bytes_ = bytes;
  int32_t row = 0;
  if (!free_encoded_.empty()) {
    row = free_encoded_.back();
    free_encoded_.pop_back();
  } else {
    if (encoded_rows_ % kOwnedChunkRows == 0) {
      encoded_chunks_.push_back(std::make_unique_for_overwrite<uint8_t[]>(
          static_cast<size_t>(kOwnedChunkRows) * static_cast<size_t>(bytes)));
      encoded_codec_.resize(encoded_codec_.size() + kOwnedChunkRows, nullptr);
    }
    row = encoded_rows_++;
  }
  encoded_codec_[static_cast<size_t>(row)] = codec;
  return row;
}

void KvCache::Release(const RowRef& row) {
  if (row.kind == RowKind::kFloat) free_owned_.push_back(row.index);
  if (row.kind == RowKind::kEncoded) free_encoded_.push_back(row.index);
}

void KvCache::Admit(int64_t position, RowRef row) {
  KVSIM_ASSERT(position >= 0 && position < max_positions_, "position {} outside [0, {})", position,
               max_positions_);
  KVSIM_ASSERT(slot_of_[static_cast<size_t>(position)] < 0, "position {} is already resident",
               position);
  const int64_t slot = size_++;
  source_prefix_ = source_prefix_ && row.kind == RowKind::kSource && slot == position;
  if (static_cast<size_t>(slot) == entries_.size()) {
    entries_.emplace_back();
    rows_.emplace_back();
  }
  entries_[static_cast<size_t>(slot)] = CacheEntry{position, PrecisionTier::kFull, 0};
  rows_[static_cast<size_t>(slot)] = row;
  slot_of_[static_cast<size_t>(position)] = static_cast<int32_t>(slot);
  peak_size_ = std::max(peak_size_, size_);
}

void KvCache::Append(int64_t position, const float* key, const float* value) {
  const int32_t row = NewOwnedRow();
  std::copy(key, key + head_dim_, OwnedRow(row, /*value=*/false));
  std::copy(value, value + head_dim_, OwnedRow(row, /*value=*/true));
  Admit(position, RowRef{RowKind::kFloat, row});
}

void KvCache::AppendFromSource(int64_t position) {
  KVSIM_ASSERT(source_keys_ != nullptr, "AppendFromSource on a cache without a source");
  Admit(position, RowRef{});
}

void KvCache::Apply(const EvictionDecision& decision) {
  for (const EntryRewrite& rewrite : decision.rewrites) {
    const int64_t slot = SlotOf(rewrite.position);
    KVSIM_ASSERT(slot >= 0, "rewrite of position {} which is not resident", rewrite.position);
    RowRef& ref = rows_[static_cast<size_t>(slot)];
    source_prefix_ = false;
    if (rewrite.codec != nullptr) {
      KVSIM_ASSERT(static_cast<int64_t>(rewrite.encoded.size()) == rewrite.codec->EncodedBytes(),
                   "encoded rewrite of position {} has {} bytes, its codec {}", rewrite.position,
                   rewrite.encoded.size(), rewrite.codec->EncodedBytes());
      if (ref.kind != RowKind::kEncoded) {
        Release(ref);
        ref = RowRef{RowKind::kEncoded, NewEncodedRow(rewrite.codec)};
      }
      encoded_codec_[static_cast<size_t>(ref.index)] = rewrite.codec;
      std::copy(rewrite.encoded.begin(), rewrite.encoded.end(), EncodedRow(ref.index));
    } else {
      KVSIM_ASSERT(rewrite.key.size() == head_dim_ && rewrite.value.size() == head_dim_,
                   "rewrite of position {} has {}/{} values, expected {}", rewrite.position,
                   rewrite.key.size(), rewrite.value.size(), head_dim_);
      if (ref.kind != RowKind::kFloat) {
        Release(ref);
        ref = RowRef{RowKind::kFloat, NewOwnedRow()};
      }
      std::copy(rewrite.key.data(), rewrite.key.data() + head_dim_, OwnedRow(ref.index, false));
      std::copy(rewrite.value.data(), rewrite.value.data() + head_dim_, OwnedRow(ref.index, true));
    }
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
  source_prefix_ = false;
  const auto slot = static_cast<size_t>(slot_of_[static_cast<size_t>(position)]);
  const auto last = static_cast<size_t>(size_ - 1);
  Release(rows_[slot]);
  if (slot != last) {
    entries_[slot] = entries_[last];
    rows_[slot] = rows_[last];
    slot_of_[static_cast<size_t>(entries_[slot].position)] = static_cast<int32_t>(slot);
  }
  slot_of_[static_cast<size_t>(position)] = -1;
  --size_;
}

}  // namespace kvsim::sim
