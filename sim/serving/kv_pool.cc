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
    : geometry_(geometry),
      tokens_(static_cast<size_t>(num_sequences), 0),
      rows_(static_cast<size_t>(num_sequences), 0),
      tables_(static_cast<size_t>(num_sequences), nullptr) {}

void KvPool::SetStreamBytes(int64_t seq, const StreamBytesTable* table) {
  KVSIM_ASSERT(tokens(seq) == 0, "sequence {} changes its byte table while holding tokens", seq);
  tables_[static_cast<size_t>(seq)] = table;
}

sim::KvTierBytes KvPool::BytesFor(int64_t seq, int64_t tokens) const {
  const StreamBytesTable* table = tables_[static_cast<size_t>(seq)];
  sim::KvTierBytes stream;
  if (table == nullptr) {
    stream.full = tokens * (geometry_.block_bytes / geometry_.block_tokens);
  } else {
    KVSIM_ASSERT(tokens >= 0 && tokens < static_cast<int64_t>(table->size()),
                 "sequence {}: {} tokens outside its byte table (up to {})", seq, tokens,
                 table->size() - 1);
    stream = (*table)[static_cast<size_t>(tokens)];
  }
  return sim::KvTierBytes{.full = stream.full * geometry_.row_blocks,
                          .quantized = stream.quantized * geometry_.row_blocks,
                          .metadata = stream.metadata * geometry_.row_blocks};
}

int64_t KvPool::RowsFor(int64_t seq, int64_t tokens) const {
  if (tables_[static_cast<size_t>(seq)] == nullptr) return geometry_.RowsFor(tokens);
  const sim::KvTierBytes b = BytesFor(seq, tokens);
  const int64_t row = geometry_.RowBytes();  // a tier's bytes fill whole blocks of its own
  return (b.full + row - 1) / row + (b.quantized + b.metadata + row - 1) / row;
}

int64_t KvPool::FreeRowsIf(int64_t seq, int64_t tokens) const {
  return free_rows() + rows(seq) - RowsFor(seq, tokens);
}

void KvPool::Set(int64_t seq, int64_t tokens) {
  KVSIM_ASSERT(tokens >= 0, "negative tokens {}", tokens);
  KVSIM_ASSERT(FreeRowsIf(seq, tokens) >= 0, "pool overflow: sequence {} to {} tokens", seq,
               tokens);
  const int64_t rows = RowsFor(seq, tokens);
  const sim::KvTierBytes before = BytesFor(seq, this->tokens(seq));
  const sim::KvTierBytes after = BytesFor(seq, tokens);
  allocated_rows_ += rows - this->rows(seq);
  used_.full += after.full - before.full;
  used_.quantized += after.quantized - before.quantized;
  used_.metadata += after.metadata - before.metadata;
  tokens_[static_cast<size_t>(seq)] = tokens;
  rows_[static_cast<size_t>(seq)] = rows;
  KVSIM_ASSERT(allocated_bytes() <= geometry_.capacity_bytes, "allocated {} > capacity {}",
               allocated_bytes(), geometry_.capacity_bytes);
  KVSIM_ASSERT(fragmentation_bytes() >= 0, "negative fragmentation {}", fragmentation_bytes());
}

}  // namespace kvsim::serving
