// The paged pool: geometry as vLLM lays blocks out, and exact byte conservation.
#include "sim/serving/kv_pool.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kvsim::serving
