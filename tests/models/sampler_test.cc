#include "models/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "common/error.h"

namespace kvsim::models {
namespace {

// Logits whose softmax (temperature 1) is the given distribution.
std::vector<float> LogitsOf(const std::vector<float>& probs) {
  std::vector<float> logits;
  for (const float p : probs) logits.push_back(std::log(p));
  return logits;
}

TEST(Sampler, GreedyIsArgmax) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 2.5f};
  Sampler sampler(SamplingOptions{});
  EXPECT_EQ(sampler.Sample(logits), 1);  // first of the tied maxima
  EXPECT_EQ(Argmax(logits), 1);
  const std::vector<float> last = {-3.0f, -2.0f, -1.0f};
  EXPECT_EQ(sampler.Sample(last), 2);
}

TEST(Sampler, NucleusIsTheShortestPrefixAboveTopP) {
  // Sorted: id 2 (0.4), id 0 (0.3), id 3 (0.2), id 1 (0.1). Cumulative 0.4, 0.7, 0.9, 1.0.
  const std::vector<float> probs = {0.3f, 0.1f, 0.4f, 0.2f};
  EXPECT_EQ(TopPNucleus(probs, 0.35f), (std::vector<int32_t>{2}));
  EXPECT_EQ(TopPNucleus(probs, 0.5f), (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(TopPNucleus(probs, 0.8f), (std::vector<int32_t>{2, 0, 3}));
  EXPECT_EQ(TopPNucleus(probs, 1.0f).size(), 4u);
}

TEST(Sampler, TopPSamplesOnlyFromTheNucleusInProportion) {
  const std::vector<float> probs = {0.3f, 0.1f, 0.4f, 0.2f};
  Sampler sampler(SamplingOptions{1.0f, 0.5f, 42});
  std::map<int32_t, int> counts;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(LogitsOf(probs))];
  EXPECT_EQ(counts.size(), 2u);  // only ids 2 and 0
  EXPECT_EQ(counts.count(1) + counts.count(3), 0u);
  // Within the nucleus the renormalised probabilities are 4/7 and 3/7 (5 sigma ~ 0.0175).
  EXPECT_NEAR(counts[2] / static_cast<double>(draws), 4.0 / 7.0, 0.0175);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  auto draw = [&](uint64_t seed) {
    Sampler sampler(SamplingOptions{0.8f, 0.9f, seed});
    std::vector<int32_t> ids;
    for (int i = 0; i < 64; ++i) ids.push_back(sampler.Sample(logits));
    return ids;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
  const auto ids = draw(7);
  EXPECT_GT(std::set<int32_t>(ids.begin(), ids.end()).size(), 3u);  // really random
}

TEST(Sampler, RejectsInvalidOptions) {
  EXPECT_THROW(Sampler(SamplingOptions{-1.0f, 1.0f, 0}), InputError);
  EXPECT_THROW(Sampler(SamplingOptions{1.0f, 0.0f, 0}), InputError);
  EXPECT_THROW(Sampler(SamplingOptions{1.0f, 1.5f, 0}), InputError);
}

}  // namespace
}  // namespace kvsim::models
