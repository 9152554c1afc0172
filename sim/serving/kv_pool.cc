#include "sim/serving/kv_pool.h"

#include "common/error.h"

namespace kvsim::serving {

PoolGeometry PoolGeometry::Make(const models::ModelShape& shape,
                                int block_tokens,
                                int64_t capacity_bytes,
                                const char* context) {
  if (block_tokens < 1 || block_tokens > 65536) {
    ThrowInputError("{}: block_tokens {} must be in [1, 65536]", context, block_tokens);
  }
  PoolGeometry g;
  g.block_tokens = block_tokens;
  g.row_blocks = static_cast<int64_t>(shape.layers) * shape.kv_heads;
  g.block_bytes = block_tokens * shape.KvBytesPerTokenPerHead();
  g.capacity_bytes = capacity_bytes;
  if (capacity_bytes < g.RowBytes()) {
    ThrowInputError(
        "{}: capacity {} bytes holds no block row ({} bytes = {} blocks of {} tokens x {} layers "
        "x {} KV heads): expected at least that",
        context, capacity_bytes, g.RowBytes(), g.row_blocks, block_tokens, shape.layers,
        shape.kv_heads);
  }
  g.capacity_rows = capacity_bytes / g.RowBytes();
  return g;
}

KvPool::KvPool(PoolGeometry geometry, int64_t num_sequences)
    : geometry_(geometry), tokens_(static_cast<size_t>(num_sequences), 0) {}

int64_t KvPool::FreeRowsIf(int64_t seq, int64_t tokens) const {
  return free_rows() + rows(seq) - geometry_.RowsFor(tokens);
}

void KvPool::Set(int64_t seq, int64_t tokens) {
  KVSIM_ASSERT(tokens >= 0, "negative tokens {}", tokens);
  KVSIM_ASSERT(FreeRowsIf(seq, tokens) >= 0, "pool overflow: sequence {} to {} tokens", seq,
               tokens);
  allocated_rows_ += geometry_.RowsFor(tokens) - rows(seq);
  used_tokens_ += tokens - this->tokens(seq);
  tokens_[static_cast<size_t>(seq)] = tokens;
  KVSIM_ASSERT(allocated_bytes() <= geometry_.capacity_bytes, "allocated {} > capacity {}",
               allocated_bytes(), geometry_.capacity_bytes);
  KVSIM_ASSERT(fragmentation_bytes() >= 0, "negative fragmentation {}", fragmentation_bytes());
}

}  // namespace kvsim::serving
