// EpiCache (card 1): episodes (policies/episodes.h) by k-means on hand-placed points; on a
// synthetic multi-turn trace with clear topics the history segments cluster by topic and the
// question routes to its topic's episode; the `epicache` policy's block-wise cache keeps the
// question's episode.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "models/model_shape.h"
#include "policies/episodes.h"
#include "policy_test_util.h"
#include "traces/synthetic/synthetic.h"

namespace kvsim::policies {
namespace {

TEST(Episodes, KMeansFindsSeparatedGroupsAndIsDeterministic) {
  // Three tight groups around (0,0), (10,0), (0,10).
  Eigen::MatrixXd points(9, 2);
  points << 0, 0, 0.1, 0, 0, 0.1, 10, 0, 10.1, 0, 10, 0.1, 0, 10, 0.1, 10, 0, 10.1;
  const KMeansResult a = KMeans(points, 3, 42);
  const KMeansResult b = KMeans(points, 3, 42);
  EXPECT_EQ(a.labels, b.labels);
  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ(a.labels[static_cast<size_t>(3 * g)], a.labels[static_cast<size_t>(3 * g + 1)]);
    EXPECT_EQ(a.labels[static_cast<size_t>(3 * g)], a.labels[static_cast<size_t>(3 * g + 2)]);
  }
  EXPECT_EQ(std::set<int>(a.labels.begin(), a.labels.end()).size(), 3u);
  // Centroids are member means: group (10, 0) has mean (10.0333, 0.0333).
  const Eigen::RowVectorXd c = a.centroids.row(a.labels[3]);
  EXPECT_NEAR(c[0], 30.1 / 3, 1e-12);
  EXPECT_NEAR(c[1], 0.1 / 3, 1e-12);
  // Each group: squared distances 2/900 + 5/900 + 5/900 to its mean; three groups.
  EXPECT_NEAR(a.inertia, 3 * 12.0 / 900, 1e-9);
}

TEST(Episodes, RoutingUsesTheRawDotProductWithCentroids) {
  Eigen::MatrixXd centroids(2, 2);
  centroids << 1.0, 0.0, 0.0,
      0.5;  // the second is a looser cluster (shorter centroid)
  Eigen::VectorXd v(2);
  v << 0.6, 0.8;  // closer in angle to the second, but 0.6 * 1 > 0.8 * 0.5
  EXPECT_EQ(RouteToEpisode(v, centroids), 0);
  v << 0.3, 0.95;
  EXPECT_EQ(RouteToEpisode(v, centroids), 1);
}

TEST(Episodes, MultiTurnQuestionRoutesToItsTopicsEpisode) {
  using traces::synthetic::Scenario;
  const models::ModelShape shape = models::WithLayers(models::ShapePreset("llama-3-8b"), 2);
  for (const uint64_t seed : {1u, 2u, 3u}) {
    traces::synthetic::SynthParams p = traces::synthetic::ScenarioParams(Scenario::kMultiTurn);
    p.prompt_len = 640;
    p.decode_len = 8;
    p.seed = seed;
    const traces::synthetic::SynthTrace s = traces::synthetic::GenerateSynthetic(shape, p);
    const auto& segments = s.trace.meta().segments;
    // History = the segments with a topic; the question is the segment after them.
    std::vector<traces::Segment> history;
    for (size_t i = 0; i < segments.size(); ++i) {
      if (s.layout.segment_topics[i] >= 0) history.push_back(segments[i]);
    }
    const std::vector<EpisodeWindow> windows = MakeWindows(history, 1);
    ASSERT_EQ(windows.size(), history.size());
    Eigen::MatrixXd points(static_cast<int64_t>(windows.size()), 0);
    for (size_t w = 0; w < windows.size(); ++w) {
      const Eigen::VectorXd e = KeyEmbedding(s.trace, windows[w].begin, windows[w].end);
      if (points.cols() == 0) points.resize(static_cast<int64_t>(windows.size()), e.size());
      points.row(static_cast<int64_t>(w)) = e.transpose();
    }
    const KMeansResult km = KMeans(points, p.topics, 42);
    // Clusters are exactly the topics (a bijection).
    std::map<int, int> topic_of_label;
    for (size_t w = 0; w < windows.size(); ++w) {
      const int topic = s.layout.segment_topics[static_cast<size_t>(windows[w].first_segment)];
      const auto [it, inserted] = topic_of_label.try_emplace(km.labels[w], topic);
      EXPECT_EQ(it->second, topic) << "seed " << seed << " window " << w;
    }
    EXPECT_EQ(topic_of_label.size(), static_cast<size_t>(p.topics));
    // The question [prompt_len - question_len, prompt_len) routes to its topic's episode.
    const Eigen::VectorXd q = QueryEmbedding(s.trace, p.prompt_len - p.question_len, p.prompt_len);
    const int episode = RouteToEpisode(q, km.centroids);
    EXPECT_EQ(topic_of_label[episode], s.layout.question_topic) << "seed " << seed;
  }
}

TEST(EpiCachePolicy, BlockwiseCacheKeepsTheQuestionsEpisode) {
  using traces::synthetic::Scenario;
  const models::ModelShape shape{"test", 2, 8, 2, 64, 10000.0, 2};
  traces::synthetic::SynthParams p = traces::synthetic::ScenarioParams(Scenario::kMultiTurn);
  p.prompt_len = 640;
  p.decode_len = 4;
  p.seed = 5;
  const traces::synthetic::SynthTrace s = traces::synthetic::GenerateSynthetic(shape, p);
  const auto& segments = s.trace.meta().segments;
  std::vector<int> topic_of(static_cast<size_t>(p.prompt_len), -1);
  int64_t topic_tokens = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    for (int64_t q = segments[i].begin; q < std::min(segments[i].end, p.prompt_len); ++q) {
      topic_of[static_cast<size_t>(q)] = s.layout.segment_topics[i];
      topic_tokens += s.layout.segment_topics[i] == s.layout.question_topic ? 1 : 0;
    }
  }
  ASSERT_GT(topic_tokens, 96);
  sim::ReplayOptions options;
  options.prefill_block = 64;
  PolicyParams params;
  params.Set("window", "1");
  params.Set("medoids", "2");
  const testing::ResidentLog log = testing::ReplayAll(s.trace, "epicache", params, 96, options);
  for (int l = 0; l < 2; ++l) {
    for (const auto& stream : log[static_cast<size_t>(l)][0]) {
      int64_t history = 0, on_topic = 0, question = 0;
      for (const int64_t q : stream) {
        if (q >= p.prompt_len - p.question_len) {
          ++question;
        } else {
          ++history;
          on_topic += topic_of[static_cast<size_t>(q)] == s.layout.question_topic ? 1 : 0;
        }
      }
      // The question (32 tokens) and the first generated token are protected; nearly all the rest
      // of the budget holds the question's topic (4 topics: chance would be ~1/4).
      EXPECT_EQ(question, p.question_len + 1) << "layer " << l;
      EXPECT_GT(on_topic, history * 3 / 4) << "layer " << l;
    }
  }
}

}  // namespace
}  // namespace kvsim::policies
