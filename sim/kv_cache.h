#pragma once
// One stream's KV cache: the resident tokens of one (layer, KV head), or of one (layer, query
// head) in GqaMode::kQueryHead. The cache is the only code that removes or rewrites entries: a
// policy proposes an EvictionDecision, the cache applies it and asserts the budget (libCacheSim's
// split of asking from doing).
//
// Layout: resident entries live in slots [0, size()). Removal moves the last slot into the hole,
// so slot order is NOT position order; identify tokens by position (unique within a stream),
// never by slot across steps.
//
// Storage: an entry's K/V rows are either VIEWED in a source matrix the cache was built over
// (the trace's rows for this stream: AppendFromSource), or OWNED by the cache (Append copies,
// and every rewrite lands in owned rows). A replay keeps pristine entries as positions only, so
// a sweep of many cells over a long trace costs O(resident positions) per cell, not copies of
// K/V (issue 11); the closed loop, whose K/V come from the model, owns its rows. A rewrite may
// instead hand over an ENCODED entry (MiKV's low-precision codes, RowCodec below): the cache keeps
// the bytes and decodes a row when it is read, so a 2-bit entry costs what its codes cost, not
// 2 x head_dim floats.
//
// Thread-safety: none, not even for concurrent reads (an encoded row is decoded into scratch the
// cache owns); one replay task owns a cache.
#include <Eigen/Dense>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/tensor.h"

namespace kvsim::sim {

// Storage precision of an entry. Quantized tiers (KIVI, MiKV) set kQuantized through an
// EntryRewrite that holds the fake-quantized K/V (sim/quantization.h); their bytes reach the
// memory ledger under kv_quantized / quant_metadata through EvictionPolicy::TierBytes.
enum class PrecisionTier : uint8_t { kFull, kQuantized };
const char* PrecisionTierName(PrecisionTier tier);

struct CacheEntry {
  int64_t position = 0;  // token position in the trace, unique within a stream
  PrecisionTier tier = PrecisionTier::kFull;
  int32_t merge_count = 0;  // tokens merged into this entry by rewrites (D2O); 0 = pristine
  // True while K/V are exactly the trace's rows for `position` (no rewrite, full precision).
  bool pristine() const { return merge_count == 0 && tier == PrecisionTier::kFull; }
};

// Reads entries a policy stores encoded rather than as float rows. Decode must be a pure function
// of the bytes: the same bytes give the same floats at every read. A codec must outlive every
// cache that holds one of its entries.
class RowCodec {
 public:
  virtual ~RowCodec() = default;
  // Bytes of one encoded entry (its key and its value); the same for every entry.
  virtual int64_t EncodedBytes() const = 0;
  // Writes the entry's key (value = false) or value (true) row, head_dim floats, to `out`.
  virtual void Decode(const uint8_t* encoded, bool value, float* out) const = 0;
};

// Replace the K/V of a resident entry (D2O merges evicted tokens into their nearest survivor;
// KIVI / MiKV store the dequantized values of a demoted entry with merged_tokens = 0).
struct EntryRewrite {
  int64_t position = 0;
  Eigen::VectorXf key = {};    // head_dim
  Eigen::VectorXf value = {};  // head_dim
  int32_t merged_tokens = 1;   // added to the entry's merge_count
  // The entry's new tier (KIVI / MiKV demotion); unset = unchanged.
  std::optional<PrecisionTier> tier = std::nullopt;
  // Instead of key / value (then left empty): the entry's encoded bytes, codec->EncodedBytes()
  // of them, read back through `codec`.
  const RowCodec* codec = nullptr;
  std::vector<uint8_t> encoded = {};
};

// What a policy asks the cache to do to one stream at an evict phase. Applied in this order:
// rewrites (so merges can read victims that are still resident), then removal of `victims`.
struct EvictionDecision {
  std::vector<int64_t> victims;  // positions, each resident, no duplicates
  std::vector<EntryRewrite> rewrites;
  void Clear() {
    victims.clear();
    rewrites.clear();
  }
};

class KvCache {
 public:
  // `max_positions`: one past the largest position that will ever be appended (the trace's T).
  // Entries are stored as needed: a cache's memory follows its resident count, not T.
  KvCache(int head_dim, int64_t max_positions);
  // A cache whose pristine entries are views of `source_keys` / `source_values` (max_positions x
  // head_dim, row = position), which must outlive the cache.
  KvCache(ConstMatrixMap source_keys, ConstMatrixMap source_values);

  int head_dim() const { return head_dim_; }
  int64_t size() const { return size_; }
  int64_t peak_size() const { return peak_size_; }

  // Resident entries, slot order, size() of them. Valid until the next mutating call.
  std::span<const CacheEntry> entries() const {
    return {entries_.data(), static_cast<size_t>(size_)};
  }
  // K/V row of a resident slot (head_dim), valid until the next mutating call and, for an encoded
  // entry, until the next KeyRow (resp. ValueRow) call: hold one key row and one value row at a
  // time.
  Eigen::Map<const Eigen::RowVectorXf> KeyRow(int64_t slot) const {
    return Eigen::Map<const Eigen::RowVectorXf>(RowData(slot, /*value=*/false), head_dim_);
  }
  Eigen::Map<const Eigen::RowVectorXf> ValueRow(int64_t slot) const {
    return Eigen::Map<const Eigen::RowVectorXf>(RowData(slot, /*value=*/true), head_dim_);
  }
  // Every resident K (or V) row gathered in slot order: size() x head_dim (allocates; for
  // policies that need the whole matrix, e.g. key norms, and for tests).
  RowMatrixXf Keys() const { return Gather(/*value=*/false); }
  RowMatrixXf Values() const { return Gather(/*value=*/true); }
  // True when slot's K/V are rows of the source matrices (its key logits can be reused from a
  // full-cache pass over the same source).
  bool IsSourceView(int64_t slot) const {
    return rows_[static_cast<size_t>(slot)].kind == RowKind::kSource;
  }
  // Resident entries stored encoded (RowCodec).
  int64_t EncodedEntries() const {
    return encoded_rows_ - static_cast<int32_t>(free_encoded_.size());
  }
  // True while slot j holds position j, viewed in the source, for every slot: nothing was ever
  // evicted, rewritten or copied in. Then the resident K/V are the source's first size() rows,
  // contiguous (attention over them needs no gather).
  bool IsSourcePrefix() const { return source_prefix_; }
  // The source's K/V rows [0, rows). REQUIRES a cache built over a source.
  ConstMatrixMap SourceKeys(int64_t rows) const {
    return ConstMatrixMap(source_keys_, rows, head_dim_);
  }
  ConstMatrixMap SourceValues(int64_t rows) const {
    return ConstMatrixMap(source_values_, rows, head_dim_);
  }
  int64_t Position(int64_t slot) const { return entries_[static_cast<size_t>(slot)].position; }

  bool Contains(int64_t position) const { return SlotOf(position) >= 0; }
  // Slot of a resident position, or -1.
  int64_t SlotOf(int64_t position) const;
  // Resident positions in increasing order (allocates; for tests, metrics and policies that need
  // position order).
  std::vector<int64_t> SortedPositions() const;
  int64_t CountTier(PrecisionTier tier) const;

  // Budget: size() <= budget_tokens + slack_tokens must hold after every Apply(). Set by the
  // replay engine (prefill-regime decode steps raise it by one per appended token).
  int64_t budget_tokens() const { return budget_tokens_; }
  void set_budget_tokens(int64_t tokens) { budget_tokens_ = tokens; }
  int64_t slack_tokens() const { return slack_tokens_; }
  void set_slack_tokens(int64_t tokens) { slack_tokens_ = tokens; }
  bool OverBudget() const { return size_ > budget_tokens_ + slack_tokens_; }

  // Admits a token (a prefill or decode step), copying head_dim floats from key/value.
  // REQUIRES: position < max_positions and not resident.
  void Append(int64_t position, const float* key, const float* value);
  // Admits `position` as a view of its source rows. REQUIRES a cache built over a source.
  void AppendFromSource(int64_t position);
  // Applies a policy's decision (rewrites, then removals), then asserts the budget.
  // KVSIM_ASSERT fails if a victim or rewrite target is not resident, a victim repeats, or the
  // cache is still over budget afterwards.
  void Apply(const EvictionDecision& decision);

 private:
  // Where a slot's K/V live: the source rows of its position, an owned float row pair, or an
  // owned encoded entry; `index` numbers the owned rows of its kind.
  enum class RowKind : uint8_t { kSource, kFloat, kEncoded };
  struct RowRef {
    RowKind kind = RowKind::kSource;
    int32_t index = -1;
  };
  void Admit(int64_t position, RowRef row);
  void Remove(int64_t position);
  void Release(const RowRef& row);
  int32_t NewOwnedRow();
  int32_t NewEncodedRow(const RowCodec* codec);
  uint8_t* EncodedRow(int32_t row) const;
  const float* RowData(int64_t slot, bool value) const;
  RowMatrixXf Gather(bool value) const;

  int head_dim_;
  int64_t max_positions_;
  int64_t size_ = 0;
  int64_t peak_size_ = 0;
  int64_t budget_tokens_ = 0;
  int64_t slack_tokens_ = 0;
  bool source_prefix_ = true;           // see IsSourcePrefix
  const float* source_keys_ = nullptr;  // max_positions x head_dim, or null
  const float* source_values_ = nullptr;
  std::vector<CacheEntry> entries_;  // slot order, size_ valid
  std::vector<RowRef> rows_;         // slot order, size_ valid
  // Owned rows live in fixed chunks of kOwnedChunkRows rows that never move: a KIVI or MiKV cell
  // owns a row pair for nearly every token, and one growing vector would hold up to twice its
  // rows, three times while it reallocates (issue 11's memory bound on long traces).
  static constexpr int32_t kOwnedChunkRows = 256;
  float* OwnedRow(int32_t row, bool value) const;
  std::vector<std::unique_ptr<float[]>> owned_key_chunks_;  // kOwnedChunkRows x head_dim each
  std::vector<std::unique_ptr<float[]>> owned_value_chunks_;
  int32_t owned_rows_ = 0;           // rows handed out so far (used or free)
  std::vector<int32_t> free_owned_;  // owned rows no entry uses
  // Encoded entries, in chunks of kOwnedChunkRows x encoded_bytes_ that never move; every codec
  // of one cache has the same EncodedBytes().
  int64_t encoded_bytes_ = 0;
  std::vector<std::unique_ptr<uint8_t[]>> encoded_chunks_;
  std::vector<const RowCodec*> encoded_codec_;  // per encoded row
  int32_t encoded_rows_ = 0;
  std::vector<int32_t> free_encoded_;
  mutable std::vector<float> decoded_key_;  // head_dim, the last encoded key row read
  mutable std::vector<float> decoded_value_;
  std::vector<int32_t> slot_of_;  // position -> slot or -1
};

}  // namespace kvsim::sim
