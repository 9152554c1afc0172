// The scheduler on token counts: a hand-worked preemption case per reaction, pool accounting
// over a long run, Little's law.
#include "sim/serving/scheduler.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kvsim::serving {
namespace {

// 1 layer, 1 KV head, head_dim 1: a token costs 4 bytes, a block of 2 tokens 8 bytes.
models::ModelShape Unit() {
  models::ModelShape shape;
  shape.name = "unit";
  shape.layers = 1;
  shape.q_heads = 1;
  shape.kv_heads = 1;
  shape.head_dim = 1;
  return shape;
}

// Every iteration lasts 1 simulated second (bandwidth and FLOP/s so high that only the overhead
// counts: < 1e-20 s each).
CostModel OneSecondIterations() {
  CostModel cost;
  cost.overhead_s = 1.0;
  cost.hbm_bytes_per_s = 1e30;
  cost.peak_flops = 1e30;
  cost.swap_bytes_per_s = 1e30;
  cost.params = 1.0;
  cost.weight_bytes = 1.0;
  return cost;
}

// Two requests of prompt 3, decode 3 on a pool of 4 blocks of 2 tokens (8 tokens); A arrives
// at 0, B at 0.5. Iterations take 1 s each.
ScheduleResult TwoRequests(OnFull on_full) {
  SchedulerConfig config;
  config.on_full = on_full;
  config.iteration_tokens = 8;
  const PoolGeometry pool = PoolGeometry::Make(Unit(), 2, 4 * 8, "t");
  const std::vector<SequenceShape> shapes = {{3, 3, INT64_MAX / 4, true}};
  const std::vector<ServingRequest> requests = {{0, 0.0, 0}, {1, 0.5, 0}};
  return Schedule(config, pool, OneSecondIterations(), Unit(), shapes, requests);
}

void ExpectTime(double expected, double actual, const char* what) {
  EXPECT_NEAR(actual, expected, 1e-9) << what;
}

// Worked by hand (preempt-recompute, vLLM's default):
//  [0,1) A prefills 3 tokens (2 blocks).                          A's first token at 1.
//  [1,2) A decodes (4 tokens, 2 blocks); B, arrived at 0.5, prefills 3 tokens (2 blocks): the
//        pool is full (4 blocks).                                 B's first token at 2.
//  [2,3) A's 5th token needs a 3rd block: B, the latest arrival, is preempted (its 2 blocks
//        freed; it must recompute 3 tokens). B needs 2 blocks, 1 is free: it waits.
//  [3,4) A decodes its 3rd and last token (6 tokens, 3 blocks).   A finishes at 4.
//  [4,5) B re-prefills its 3 tokens (no new first token).
//  [5,8) B decodes 3 tokens.                                       B finishes at 8.
TEST(Scheduler, TwoRequestPreemptRecomputeByHand) {
  const ScheduleResult r = TwoRequests(OnFull::kPreemptRecompute);
  const RequestRecord& a = r.requests[0];
  const RequestRecord& b = r.requests[1];
  ExpectTime(0.0, a.first_scheduled_s, "A scheduled");
  ExpectTime(1.0, a.first_token_s, "A first token");
  ExpectTime(4.0, a.finish_s, "A finish");
  EXPECT_EQ(a.preemptions, 0);
  ExpectTime(1.0, b.first_scheduled_s, "B scheduled");
  ExpectTime(2.0, b.first_token_s, "B first token");
  ExpectTime(8.0, b.finish_s, "B finish");
  EXPECT_EQ(b.preemptions, 1);
  EXPECT_EQ(b.decode_tokens, 3);
  EXPECT_EQ(r.iterations, 8);
  EXPECT_EQ(r.peak_allocated_bytes, 32);
}

// Swap keeps B's 3 tokens on the host: after A finishes at 4 it swaps back (2 blocks for its
// 4th token) and decodes at once: [4,5), [5,6), [6,7).  B finishes at 7.
TEST(Scheduler, TwoRequestPreemptSwapByHand) {
  const ScheduleResult r = TwoRequests(OnFull::kPreemptSwap);
  ExpectTime(4.0, r.requests[0].finish_s, "A finish");
  ExpectTime(2.0, r.requests[1].first_token_s, "B first token");
  ExpectTime(7.0, r.requests[1].finish_s, "B finish");
  EXPECT_EQ(r.requests[1].preemptions, 1);
  EXPECT_EQ(r.timeline[2].swapped_bytes, 3 * 4);  // after [2,3): B's 3 tokens on the host
}

// Queue reserves each request's peak (6 tokens = 3 blocks): B waits for A's blocks.
//  A: prefill [0,1), decodes [1,4). B: prefill [4,5) (first token 5), decodes [5,8).
TEST(Scheduler, TwoRequestQueueByHand) {
  const ScheduleResult r = TwoRequests(OnFull::kQueue);
  ExpectTime(4.0, r.requests[0].finish_s, "A finish");
  ExpectTime(4.0, r.requests[1].first_scheduled_s, "B scheduled");
  ExpectTime(5.0, r.requests[1].first_token_s, "B first token");
  ExpectTime(8.0, r.requests[1].finish_s, "B finish");
  EXPECT_EQ(r.requests[1].preemptions, 0);
}

// Evict with equal shares: two sequences split 4 blocks as 2 + 2, i.e. 4 tokens = budget 3.
//  [0,1) A prefills 3 (alone: 4 blocks share).  [1,2) A decodes, B admitted, shares 2 blocks:
//  both run to the end with no preemption: A finishes at 4, B (prefill [1,2)) at 5.
TEST(Scheduler, TwoRequestEvictEqualShares) {
  const PoolGeometry pool = PoolGeometry::Make(Unit(), 2, 4 * 8, "t");
  SchedulerConfig config;
  config.on_full = OnFull::kEvict;
  config.iteration_tokens = 8;
  config.min_budget_tokens = 2;
  const std::vector<SequenceShape> shapes = {{3, 3, INT64_MAX / 4, false}};
  const std::vector<ServingRequest> requests = {{0, 0.0, 0}, {1, 0.5, 0}};
  const ScheduleResult r = Schedule(config, pool, OneSecondIterations(), Unit(), shapes, requests);
  ExpectTime(4.0, r.requests[0].finish_s, "A finish");
  ExpectTime(5.0, r.requests[1].finish_s, "B finish");
  EXPECT_EQ(r.requests[0].min_budget_tokens, 3);  // 2 blocks x 2 tokens - 1
  EXPECT_EQ(r.requests[1].min_budget_tokens, 3);
  // The budget at each decode step: A shares with B throughout ([1,4)); B runs alone in [4,5),
  // where its 4 blocks hold 8 tokens, more than its 6-token trace (capped at 6).
  EXPECT_EQ(r.requests[0].decode_budgets, (std::vector<int64_t>{3, 3, 3}));
  EXPECT_EQ(r.requests[1].decode_budgets, (std::vector<int64_t>{3, 3, 6}));
  EXPECT_EQ(r.requests[0].preemptions + r.requests[1].preemptions, 0);
  for (const PoolSample& x : r.timeline) EXPECT_LE(x.used_bytes + x.fragmentation_bytes, 32);
}

// Prefill transient: a 12-token prompt in chunks of 8 with budget 4 (allowance 5). [0,1): the
// first chunk's 8 tokens exist, 5 are kept: 3 transient. [1,2): 5 kept + 4 new, 5 kept: 4
// transient. Decodes [2,4) have none. A token is 4 bytes.
TEST(Scheduler, PrefillChunksBeyondTheAllowanceAreTransient) {
  const PoolGeometry pool = PoolGeometry::Make(Unit(), 2, 8 * 8, "t");
  SchedulerConfig config;
  config.on_full = OnFull::kEvict;
  config.iteration_tokens = 8;
  config.min_budget_tokens = 2;
  const std::vector<SequenceShape> shapes = {{12, 2, 4, false}};
  const std::vector<ServingRequest> requests = {{0, 0.0, 0}};
  const ScheduleResult r = Schedule(config, pool, OneSecondIterations(), Unit(), shapes, requests);
  ASSERT_EQ(r.timeline.size(), 4u);
  EXPECT_EQ(r.timeline[0].prefill_transient_bytes, 3 * 4);
  EXPECT_EQ(r.timeline[1].prefill_transient_bytes, 4 * 4);
  EXPECT_EQ(r.timeline[2].prefill_transient_bytes, 0);
  EXPECT_EQ(r.timeline[3].prefill_transient_bytes, 0);
  EXPECT_EQ(r.timeline[1].kv_full_bytes, 5 * 4);
}

// A long Poisson run of mixed lengths on a tight pool, every reaction.
ScheduleResult LongRun(OnFull on_full, int64_t n, double rate) {
  models::ModelShape shape = Unit();
  shape.layers = 2;
  shape.kv_heads = 2;
  shape.q_heads = 4;
  shape.head_dim = 8;
  SchedulerConfig config;
  config.on_full = on_full;
  config.iteration_tokens = 64;
  const PoolGeometry pool = PoolGeometry::Make(shape, 16, 4 * 16 * 32 * 40, "t");  // 40 rows
  const std::vector<SequenceShape> shapes = {
      {100, 50, INT64_MAX / 4, false}, {30, 120, 64, false}, {200, 20, INT64_MAX / 4, false}};
  WorkloadSpec w;
  w.rate_per_s = rate;
  w.num_requests = n;
  w.seed = 11;
  CostModel cost;
  cost.overhead_s = 0.01;
  return Schedule(config, pool, cost, shape, shapes, MakeRequests(w, {"a", "b", "c"}));
}

TEST(Scheduler, PoolNeverExceedsCapacityAndBytesAddUp) {
  for (OnFull mode :
       {OnFull::kQueue, OnFull::kPreemptRecompute, OnFull::kPreemptSwap, OnFull::kEvict}) {
    const ScheduleResult r = LongRun(mode, 300, 20.0);
    const int64_t capacity = 4 * 16 * 32 * 40;
    for (const PoolSample& x : r.timeline) {
      ASSERT_EQ(x.used_bytes + x.fragmentation_bytes + x.free_bytes, capacity) << OnFullName(mode);
      ASSERT_GE(x.free_bytes, 0) << OnFullName(mode);
    }
    EXPECT_LE(r.peak_allocated_bytes, capacity);
    for (const RequestRecord& q : r.requests) {
      EXPECT_FALSE(q.rejected);
      EXPECT_GE(q.finish_s, q.first_token_s) << OnFullName(mode);
      EXPECT_GE(q.first_token_s, q.first_scheduled_s);
      EXPECT_GE(q.first_scheduled_s, q.arrival_s);
    }
  }
}

// Little's law: mean number in system (time average of the per-iteration samples) = arrival
// rate x mean time in system, on a long stationary run below saturation.
TEST(Scheduler, LittlesLawOnALongPoissonRun) {
  const ScheduleResult r = LongRun(OnFull::kPreemptRecompute, 3000, 10.0);
  double area = 0.0, in_system = 0.0;
  for (const PoolSample& x : r.timeline) area += static_cast<double>(x.in_system) * x.iteration_s;
  for (const RequestRecord& q : r.requests) in_system += q.finish_s - q.arrival_s;
  const double l = area / r.end_s;
  const double lambda_w = in_system / r.end_s;
  EXPECT_GT(l, 1.0);  // a busy system, not a trivial one
  EXPECT_NEAR(l / lambda_w, 1.0, 0.05) << "L " << l << " lambda W " << lambda_w;
}

TEST(Scheduler, OversizedRequestIsRejectedNotStuck) {
  const PoolGeometry pool = PoolGeometry::Make(Unit(), 2, 4 * 8, "t");
  const std::vector<SequenceShape> shapes = {{3, 3, INT64_MAX / 4, true},
                                             {10, 3, INT64_MAX / 4, true}};
  const std::vector<ServingRequest> requests = {{0, 0.0, 1}, {1, 0.5, 0}};
  const ScheduleResult r =
      Schedule(SchedulerConfig{}, pool, OneSecondIterations(), Unit(), shapes, requests);
  EXPECT_TRUE(r.requests[0].rejected);
  EXPECT_FALSE(r.requests[1].rejected);
  EXPECT_GT(r.requests[1].finish_s, 0.0);
}

}  // namespace
}  // namespace kvsim::serving
