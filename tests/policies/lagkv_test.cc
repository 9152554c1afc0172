// LagKV (card 7): lag-relative scores, the official chunk schedule, kvpress's rank-normalised
// global top-k, the epsilon guard and the budget cap.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "policies/seed_policy_math.h"
#include "sim/random_trace.h"
#include "tests/policies/seed_replay_util.h"

namespace kvsim::policies {
namespace {

using seed_testing::PromptKept;
using seed_testing::ReplayAll;

// Reference chunk rows (0, 0) and (1, 2): m = (0, 0), M = (1, 2). Chunk row (0.5, 1.0) normalises
// to (0.5, 0.5), sigma 0; row (1, 0) to (1, 0), sigma = 1/sqrt(2) (unbiased over 2 channels).
// softmax([0, 0.70711]) = [1 / (1 + e^0.70711), e^0.70711 / (1 + e^0.70711)] = [0.33024, 0.66976].
TEST(LagKv, StateScoresMatchHandComputation) {
  Eigen::MatrixXd chunk(2, 2), reference(2, 2);
  chunk << 0.5, 1.0, 1.0, 0.0;
  reference << 0.0, 0.0, 1.0, 2.0;
  const Eigen::VectorXd s = LagKvStateScores(chunk, reference);
  EXPECT_NEAR(s[0], 0.33024, 1e-4);
  EXPECT_NEAR(s[1], 0.66976, 1e-4);
}

// Pitfall (card 7 (h)): the official code divides by M - m, NaN for a channel constant over the
// reference. With the epsilon every score is finite and the softmax still sums to 1; a chunk row
// leaving the zero-width range (channel 0: 2 vs constant 1) dominates.
TEST(LagKv, ZeroVarianceChannelGivesFiniteScores) {
  Eigen::MatrixXd chunk(3, 2), reference(3, 2);
  chunk << 2.0, 0.0, 1.0, 0.0, 1.0, 0.0;
  reference << 1.0, 0.0, 1.0, 0.0, 1.0, 0.0;
  const Eigen::VectorXd s = LagKvStateScores(chunk, reference);
  for (Eigen::Index i = 0; i < s.size(); ++i) EXPECT_TRUE(std::isfinite(s[i])) << i;
  EXPECT_NEAR(s.sum(), 1.0, 1e-12);
  EXPECT_GT(s[0], 0.99);
  // Fully constant chunk and reference: every sigma is 0, uniform scores.
  const Eigen::VectorXd flat = LagKvStateScores(reference, reference);
  EXPECT_NEAR(flat[0], 1.0 / 3.0, 1e-12);
}

TEST(LagKv, RanksAreArgsortOfArgsortOverL) {
  Eigen::VectorXd scores(4);
  scores << 0.3, 0.1, 0.4, 0.2;
  const Eigen::VectorXd r = LagKvRanks(scores);
  EXPECT_DOUBLE_EQ(r[0], 0.5);
  EXPECT_DOUBLE_EQ(r[1], 0.0);
  EXPECT_DOUBLE_EQ(r[2], 0.75);
  EXPECT_DOUBLE_EQ(r[3], 0.25);
}

// One head, d = 2, sinks 1, lag 2, prompt 6: chunks (1,2), (3,4), remainder 5. n = 6 >= b + 2L
// = 5, so chunk (1,2) is compressed against (3,4), keeping floor(0.5 * 2) = 1 token; the tail
// 3,4,5 (L + n - e = 3 tokens) and sink 0 stay. Keys as in StateScoresMatchHandComputation:
// s^K = [0.330, 0.670] for positions 1, 2. All values are (1, 1), so the value reference is
// constant in both channels (the epsilon case): s^V = [0.5, 0.5]. Position 2 wins.
TEST(LagKv, OfficialKeepsTheTokenThatSticksOutOfItsLagReference) {
  traces::Trace trace = seed_testing::ZeroTrace(seed_testing::Shape(1, 1, 1, 2), 6, 7);
  traces::LayerTensors& l = trace.mutable_layer(0);
  seed_testing::SetRow(l.keys, 0, 0, {1.0f, 1.0f});
  seed_testing::SetRow(l.keys, 0, 1, {0.5f, 1.0f});
  seed_testing::SetRow(l.keys, 0, 2, {1.0f, 0.0f});
  seed_testing::SetRow(l.keys, 0, 4, {1.0f, 2.0f});
  for (int64_t p = 0; p < 7; ++p) seed_testing::SetRow(l.values, 0, p, {1.0f, 1.0f});
  const auto record = ReplayAll(
      trace, "lagkv", {{"sinks", "1"}, {"lag_size", "2"}, {"ratio", "0.5"}}, /*budget=*/5);
  EXPECT_EQ(record.slack, 0);
  EXPECT_EQ(PromptKept(record.snapshots[0][0][0], 6), (std::vector<int64_t>{0, 2, 3, 4, 5}));
}

// Prompt 8, sinks 1, lag 2: chunks (1,2), (3,4), (5,6), remainder 7; e = 7, chunks (1,2) and
// (3,4) are scored against their successors, tail 5,6,7. Keys: (1,2) vs (3,4) as above; (3,4) =
// (0,0), (1,2) vs (5,6) = (0,0), (1,1): position 4 normalises to (1, 2), sigma 0.707, position 3
// to (0, 0), sigma 0. kvpress ranks: 1 -> 0, 2 -> 0.5, 3 -> 0, 4 -> 0.5; sinks and tail forced
// to 1; the global top-6 keeps 0, 2, 4, 5, 6, 7. The official variant at budget 6 derives ratio
// 6/8, keeps floor(0.75 * 2) = 1 per chunk: the same set.
TEST(LagKv, KvpressRankNormalisedGlobalTopK) {
  traces::Trace trace = seed_testing::ZeroTrace(seed_testing::Shape(1, 1, 1, 2), 8, 9);
  traces::LayerTensors& l = trace.mutable_layer(0);
  seed_testing::SetRow(l.keys, 0, 1, {0.5f, 1.0f});
  seed_testing::SetRow(l.keys, 0, 2, {1.0f, 0.0f});
  seed_testing::SetRow(l.keys, 0, 4, {1.0f, 2.0f});
  seed_testing::SetRow(l.keys, 0, 6, {1.0f, 1.0f});
  const std::vector<int64_t> expected = {0, 2, 4, 5, 6, 7};
  for (const char* variant : {"kvpress", "official"}) {
    const auto record =
        ReplayAll(trace, "lagkv", {{"variant", variant}, {"sinks", "1"}, {"lag_size", "2"}}, 6);
    EXPECT_EQ(PromptKept(record.snapshots[0][0][0], 8), expected) << variant;
  }
}

// Official schedule during decode with a budget that never binds: an independent simulation of
// card 7 (d) (S sinks, c compressed, u uncompressed; compress while u >= 2L) predicts every size.
TEST(LagKv, OfficialDecodeScheduleCompressesOnceEveryLagTokens) {
  const int64_t n = 20, total = 60, sinks = 2, lag = 4;
  const traces::Trace trace = sim::RandomTrace(seed_testing::Shape(1, 2, 1, 8), n, total, 7);
  const auto record = ReplayAll(
      trace, "lagkv", {{"sinks", "2"}, {"lag_size", "4"}, {"ratio", "0.5"}}, /*budget=*/1000);
  int64_t compressed = 0, uncompressed = n - sinks;
  const auto compress = [&] {
    if (uncompressed < 2 * lag) return;
    const int64_t chunks = uncompressed / lag;
    compressed += (chunks - 1) * (lag / 2);
    uncompressed -= (chunks - 1) * lag;
  };
  compress();
  for (int64_t t = n; t < total; ++t) {
    ++uncompressed;
    const auto& snap = record.snapshots[0][static_cast<size_t>(t - n)][0];
    ASSERT_EQ(static_cast<int64_t>(snap.positions.size()), sinks + compressed + uncompressed)
        << "step " << t;
    EXPECT_EQ(snap.positions[0], 0);
    EXPECT_EQ(snap.positions[1], 1);
    compress();
  }
}

// The budget cap: both variants, official defaults too (lag 1024 > prompt: nothing compressible,
// the cap does all the work), hold the budget + 1 at every decode attention (evict-after-attend),
// keep the sinks, and are deterministic.
TEST(LagKv, NeverExceedsBudgetKeepsSinksAndIsDeterministic) {
  const traces::Trace trace = sim::RandomTrace(seed_testing::Shape(2, 4, 2, 8), 48, 80, 3);
  using Params = std::map<std::string, std::string, std::less<>>;
  for (const Params& params :
       {Params{}, Params{{"lag_size", "8"}, {"sinks", "4"}},
        Params{{"variant", "kvpress"}, {"lag_size", "8"}}, Params{{"variant", "kvpress"}}}) {
    for (int64_t budget : {12, 24}) {
      const auto a = ReplayAll(trace, "lagkv", params, budget);
      const auto b = ReplayAll(trace, "lagkv", params, budget);
      for (size_t layer = 0; layer < a.snapshots.size(); ++layer) {
        for (size_t step = 0; step < a.snapshots[layer].size(); ++step) {
          for (size_t s = 0; s < a.snapshots[layer][step].size(); ++s) {
            const auto& pos = a.snapshots[layer][step][s].positions;
            ASSERT_LE(static_cast<int64_t>(pos.size()), budget + 1);
            EXPECT_EQ(pos.front(), 0);
            EXPECT_EQ(pos, b.snapshots[layer][step][s].positions);
          }
        }
      }
    }
  }
}

TEST(LagKv, RejectsParametersOfTheOtherVariant) {
  PolicySetup setup;
  setup.shape = seed_testing::Shape(1, 1, 1, 4);
  setup.prompt_len = 8;
  setup.total_len = 9;
  PolicyParams params({{"variant", "kvpress"}, {"ratio", "0.5"}});
  try {
    MakePolicy("lagkv", params, setup);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ratio"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsim::policies
