// The paged pool: geometry as vLLM lays blocks out, and exact byte conservation.
#include "sim/serving/kv_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/error.h"

namespace kvsim::serving {
namespace {

models::ModelShape Stories() {
  models::ModelShape shape;
  shape.name = "stories260k";
  shape.layers = 5;
  shape.q_heads = 8;
  shape.kv_heads = 4;
  shape.head_dim = 8;
  return shape;
}

TEST(PoolGeometry, BlocksPerLayerAndKvHead) {
  const PoolGeometry g = PoolGeometry::Make(Stories(), 16, 64 * 1024, "t");
  EXPECT_EQ(g.row_blocks, 20);               // 5 layers x 4 KV heads
  EXPECT_EQ(g.block_bytes, 16 * 2 * 8 * 2);  // 16 tokens x (K, V) x head_dim x fp16
  EXPECT_EQ(g.RowBytes(), 20 * 512);
  EXPECT_EQ(g.TokenBytes(), Stories().KvBytesPerToken());
  EXPECT_EQ(g.capacity_rows, 65536 / 10240);
  EXPECT_EQ(g.RowsFor(0), 0);
  EXPECT_EQ(g.RowsFor(16), 1);
  EXPECT_EQ(g.RowsFor(17), 2);
}

TEST(PoolGeometry, CapacityBelowOneRowIsAnInputError) {
  EXPECT_THROW(PoolGeometry::Make(Stories(), 16, 10239, "pool.capacity"), InputError);
  EXPECT_THROW(PoolGeometry::Make(Stories(), 0, 1 << 20, "pool.capacity"), InputError);
}

TEST(KvPool, AllocatedEqualsUsedPlusFragmentationExactlyAndNeverAboveCapacity) {
  const PoolGeometry g = PoolGeometry::Make(Stories(), 16, 200 * 1024, "t");
  KvPool pool(g, 6);
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int64_t> seq(0, 5), tokens(0, 90);
  std::vector<int64_t> held(6, 0);
  for (int i = 0; i < 2000; ++i) {
    const int64_t s = seq(rng), t = tokens(rng);
    if (pool.FreeRowsIf(s, t) < 0) {
      EXPECT_THROW(pool.Set(s, t), InternalError);  // the caller must have checked
      continue;
    }
    pool.Set(s, t);
    held[static_cast<size_t>(s)] = t;
    int64_t rows = 0, used = 0;
    for (int64_t h : held) {
      rows += (h + 15) / 16;
      used += h * g.TokenBytes();
    }
    ASSERT_EQ(pool.allocated_bytes(), rows * g.RowBytes());
    ASSERT_EQ(pool.used_bytes(), used);
    ASSERT_EQ(pool.allocated_bytes(), pool.used_bytes() + pool.fragmentation_bytes());
    ASSERT_LE(pool.allocated_bytes(), g.capacity_bytes);
  }
}

// A quantizing policy's byte table (KIVI-like by hand: the first 2 tokens at full precision,
// 8 payload + 2 scale bytes per later token): each tier fills blocks of its own, and the pool's
// categories add up to exactly what the table says times layers x KV heads.
TEST(KvPool, QuantizedTiersTakeTheirTableBytesInBlocksOfTheirOwn) {
  const PoolGeometry g = PoolGeometry::Make(Stories(), 16, 128 * 1024, "t");  // 512 B blocks
  StreamBytesTable table;
  for (int64_t t = 0; t <= 100; ++t) {
    table.push_back(sim::KvTierBytes{.full = 32 * std::min<int64_t>(t, 2),
                                     .quantized = 8 * std::max<int64_t>(0, t - 2),
                                     .metadata = 2 * std::max<int64_t>(0, t - 2)});
  }
  KvPool pool(g, 2);
  pool.SetStreamBytes(0, &table);
  pool.Set(0, 50);  // full 64 B (1 block), quantized 48 x 10 = 480 B (1 block): 2 rows
  EXPECT_EQ(pool.rows(0), 2);
  EXPECT_EQ(pool.used().full, 64 * 20);
  EXPECT_EQ(pool.used().quantized, 384 * 20);
  EXPECT_EQ(pool.used().metadata, 96 * 20);
  pool.Set(0, 54);  // quantized 520 B: a second block
  EXPECT_EQ(pool.rows(0), 3);
  pool.Set(1, 54);  // full precision: 54 x 32 B = 1728 B, 4 blocks of 16 tokens
  EXPECT_EQ(pool.rows(1), 4);
  EXPECT_EQ(pool.used().full, (64 + 1728) * 20);
  EXPECT_EQ(pool.allocated_bytes(), 7 * g.RowBytes());
  EXPECT_EQ(pool.fragmentation_bytes(), pool.allocated_bytes() - pool.used_bytes());
  EXPECT_EQ(pool.BytesFor(0, 3).total(), (64 + 10) * 20);
  EXPECT_EQ(pool.RowsFor(0, 2), 1);
  pool.Set(0, 0);
  pool.Set(1, 0);
  EXPECT_EQ(pool.used_bytes(), 0);
  EXPECT_EQ(pool.allocated_rows(), 0);
}

}  // namespace
}  // namespace kvsim::serving
