#pragma once
// The paged KV pool of a serving simulation (vLLM's PagedAttention, SOSP 2023). Memory is handed
// out in blocks of `block_tokens` tokens of one (layer, KV head); a sequence that holds h tokens
// owns layers x kv_heads x ceil(h / block_tokens) blocks. A "block row" is the layers x kv_heads
// blocks that cover block_tokens positions of one sequence in every (layer, KV head): the pool
// allocates whole rows, so only a sequence's last row is partly empty (internal fragmentation)
// and there is no external fragmentation. Prefix sharing / copy-on-write is not modelled.
//
// A sequence whose policy keeps tokens in a cheaper form (KIVI) is charged its real bytes: its
// StreamBytesTable gives one (layer, KV head)'s bytes by tier for each token count, and its
// full-precision and quantized bytes (payload + scales) each fill blocks of block_bytes, so it
// owns ceil(full / block_bytes) + ceil(quantized / block_bytes) rows.
//
// Invariants, checked on every change (KVSIM_ASSERT): allocated bytes <= capacity, and
// allocated bytes = used bytes + internal fragmentation, exactly, in bytes.
#include <cstdint>
#include <vector>

#include "models/model_shape.h"
#include "sim/quantization.h"

namespace kvsim::serving {

struct PoolGeometry {
  int block_tokens = 16;    // vLLM's default block size
  int64_t row_blocks = 0;   // layers x kv_heads
  int64_t block_bytes = 0;  // block_tokens x 2 (K, V) x head_dim x bytes per element
  int64_t capacity_bytes = 0;
  int64_t capacity_rows = 0;  // floor(capacity / (row_blocks x block_bytes))

  // Throws InputError (naming `context`) if block_tokens < 1 or the capacity holds no row.
  static PoolGeometry Make(const models::ModelShape& shape,
                           int block_tokens,
                           int64_t capacity_bytes,
                           const char* context);
  int64_t RowBytes() const { return row_blocks * block_bytes; }
  int64_t TokenBytes() const { return RowBytes() / block_tokens; }  // every layer and head
  int64_t RowsFor(int64_t tokens) const { return (tokens + block_tokens - 1) / block_tokens; }
  int64_t CapacityTokens() const { return capacity_rows * block_tokens; }
};

// Bytes of one (layer, KV head) of a sequence holding t tokens, by tier: entry t, for t up to
// the trace's length (policies::EvictionPolicy::KeepAllStreamBytes).
using StreamBytesTable = std::vector<sim::KvTierBytes>;

// Per-sequence token counts on one pool. Sequences are dense indices [0, n).
class KvPool {
 public:
  KvPool(PoolGeometry geometry, int64_t num_sequences);

  // Charges `seq` by `table` instead of full precision (null: full precision). REQUIRES `seq`
  // holds nothing yet; the table outlives the pool.
  void SetStreamBytes(int64_t seq, const StreamBytesTable* table);

  const PoolGeometry& geometry() const { return geometry_; }
  int64_t tokens(int64_t seq) const { return tokens_[static_cast<size_t>(seq)]; }
  int64_t rows(int64_t seq) const { return rows_[static_cast<size_t>(seq)]; }
  // Rows and bytes (every layer and KV head, by tier) of `seq` if it held `tokens`.
  int64_t RowsFor(int64_t seq, int64_t tokens) const;
  sim::KvTierBytes BytesFor(int64_t seq, int64_t tokens) const;

  // Rows that would be free if `seq` held `tokens` instead of what it holds now (< 0: short).
  int64_t FreeRowsIf(int64_t seq, int64_t tokens) const;
  // Sets what `seq` holds. REQUIRES the result fits (asserted: callers check FreeRowsIf first).
  void Set(int64_t seq, int64_t tokens);

  int64_t allocated_rows() const { return allocated_rows_; }
  int64_t free_rows() const { return geometry_.capacity_rows - allocated_rows_; }
  int64_t allocated_bytes() const { return allocated_rows_ * geometry_.RowBytes(); }
  // K/V bytes of held tokens by tier (the ledger's kv_full, kv_quantized, quant_metadata).
  const sim::KvTierBytes& used() const { return used_; }
  int64_t used_bytes() const { return used_.total(); }
  int64_t fragmentation_bytes() const { return allocated_bytes() - used_bytes(); }

 private:
  PoolGeometry geometry_;
  std::vector<int64_t> tokens_;
  std::vector<int64_t> rows_;
  std::vector<const StreamBytesTable*> tables_;
  int64_t allocated_rows_ = 0;
  sim::KvTierBytes used_;
};

}  // namespace kvsim::serving
