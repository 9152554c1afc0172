// Synthetic traces: the structure is measured from the attention itself (AttentionWeights over
// the causal prefix); the layout only says which tokens to look at.
#include "traces/synthetic/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "common/error.h"
#include "common/softmax.h"
#include "models/model_shape.h"

namespace kvsim::traces::synthetic {
namespace {

// 2 layers x 8 query heads (GQA group 4) x d = 64: enough room for orthogonal directions.
models::ModelShape TestShape() { return {"test", 2, 8, 2, 64, 10000.0, 2}; }

SynthParams Params(Scenario scenario, int64_t prompt, int64_t decode, uint64_t seed = 7) {
  SynthParams p = ScenarioParams(scenario);
  p.prompt_len = prompt;
  p.decode_len = decode;
  p.seed = seed;
  return p;
}

// Attention of query position t of (layer, q_head) over positions [0, t].
Eigen::VectorXf Attention(const Trace& trace, int layer, int q_head, int64_t t) {
  const int kv_head = q_head / trace.shape().GroupSize();
  return AttentionWeights(trace.Keys(layer, kv_head).topRows(t + 1),
                          trace.Queries(layer, q_head).row(t));
}

// Attention of query t averaged over every layer and query head.
Eigen::VectorXf MeanAttention(const Trace& trace, int64_t t) {
  Eigen::VectorXf sum = Eigen::VectorXf::Zero(t + 1);
  int heads = 0;
  for (int l = 0; l < trace.num_layers(); ++l) {
    for (int h = 0; h < trace.shape().q_heads; ++h, ++heads) sum += Attention(trace, l, h, t);
  }
  return sum / static_cast<float>(heads);
}

std::vector<int64_t> TopK(const Eigen::VectorXf& scores, int64_t begin, int64_t end, int k) {
  std::vector<int64_t> ids(static_cast<size_t>(end - begin));
  std::iota(ids.begin(), ids.end(), begin);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int64_t a, int64_t b) { return scores(a) > scores(b); });
  ids.resize(static_cast<size_t>(k));
  return ids;
}

// Mean over decode steps, layers and heads of the attention mass on positions [0, n).
double MeanPrefixMass(const Trace& trace, int64_t n) {
  double sum = 0.0;
  int count = 0;
  for (int64_t t = trace.meta().prompt_len; t < trace.meta().total_len; t += 7) {
    for (int l = 0; l < trace.num_layers(); ++l) {
      for (int h = 0; h < trace.shape().q_heads; ++h, ++count) {
        sum += Attention(trace, l, h, t).head(n).sum();
      }
    }
  }
  return sum / count;
}

TEST(SyntheticTrace, SinksTakeMassWhenOnAndUniformLevelWhenOff) {
  SynthParams p = Params(Scenario::kMixed, 400, 100);
  // Only sinks and recency, so that no other structure lands on the first positions.
  p.heavy_hitters = 0;
  p.recurring = 0;
  p.needles = 0;
  const SynthTrace on = GenerateSynthetic(TestShape(), p);
  EXPECT_GT(MeanPrefixMass(on.trace, p.sinks), 0.3);  // uniform: ~0.009

  p.sinks = 0;
  const SynthTrace off = GenerateSynthetic(TestShape(), p);
  // Uniform level: 4 of ~450 positions, about 0.009.
  EXPECT_LT(MeanPrefixMass(off.trace, 4), 3.0 * 4.0 / 450.0);
}

TEST(SyntheticTrace, RecentWindowHoldsMostNonSinkMass) {
  SynthParams p = Params(Scenario::kMixed, 400, 100);
  p.sinks = 0;
  p.heavy_hitters = 0;
  p.recurring = 0;
  p.needles = 0;
  p.recent_window = 32;
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  double mass = 0.0;
  int count = 0;
  for (int64_t t = p.prompt_len; t < s.trace.meta().total_len; t += 5, ++count) {
    const Eigen::VectorXf a = MeanAttention(s.trace, t);
    mass += a.tail(p.recent_window).sum();
  }
  // Uniform would give 32 / ~450 = 0.07.
  EXPECT_GT(mass / count, 0.5);
}

TEST(SyntheticTrace, HeavyHittersStayInTopK) {
  const SynthParams p = Params(Scenario::kMixed, 400, 100);
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  ASSERT_EQ(s.layout.heavy_hitters.size(), 8u);
  const int k = p.sinks + p.heavy_hitters + p.recent_window;
  int hits = 0;
  int trials = 0;
  for (int64_t t = p.prompt_len; t < s.trace.meta().total_len; t += 3) {
    for (int l = 0; l < s.trace.num_layers(); ++l) {
      for (int h = 0; h < s.trace.shape().q_heads; ++h) {
        const auto top = TopK(Attention(s.trace, l, h, t), 0, t + 1, k);
        const std::set<int64_t> top_set(top.begin(), top.end());
        for (int64_t hh : s.layout.heavy_hitters) {
          hits += top_set.count(hh) ? 1 : 0;
          ++trials;
        }
      }
    }
  }
  EXPECT_GT(static_cast<double>(hits) / trials, 0.9);
}

// Steps t > position (from `from`) where the token gets at least `factor` times the uniform
// share 1 / (t + 1) of the head-averaged attention.
std::vector<int64_t> ImportantSteps(const Trace& trace,
                                    const std::vector<Eigen::VectorXf>& attention,
                                    int64_t from,
                                    int64_t position,
                                    double factor = 5.0) {
  std::vector<int64_t> steps;
  for (int64_t t = std::max(from, position + 1); t < trace.meta().total_len; ++t) {
    if (attention[static_cast<size_t>(t)](position) * static_cast<double>(t + 1) >= factor) {
      steps.push_back(t);
    }
  }
  return steps;
}

std::vector<Eigen::VectorXf> AllMeanAttention(const Trace& trace) {
  std::vector<Eigen::VectorXf> attention;
  for (int64_t t = 0; t < trace.meta().total_len; ++t) attention.push_back(MeanAttention(trace, t));
  return attention;
}

// Number of times the token comes back after being unimportant for >= gap steps.
int Returns(const std::vector<int64_t>& steps, int64_t gap) {
  int returns = 0;
  for (size_t i = 1; i < steps.size(); ++i) returns += steps[i] - steps[i - 1] > gap ? 1 : 0;
  return returns;
}

TEST(SyntheticTrace, RecurringTokensComeBackAfterGapsOfAtLeastW) {
  SynthParams p = Params(Scenario::kRecurrence, 200, 300);
  p.recurring = 4;
  p.recurrence_gap = 64;
  p.recurrence_on = 16;
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  const auto attention = AllMeanAttention(s.trace);
  ASSERT_EQ(s.layout.recurring.size(), 4u);
  for (const RecurringToken& token : s.layout.recurring) {
    const int64_t from = token.position + 3 * p.recent_window;
    const auto steps = ImportantSteps(s.trace, attention, from, token.position);
    ASSERT_FALSE(steps.empty()) << "token " << token.position;
    // Inside an important phase the token may dip for a step; between phases it is ignored for
    // at least W steps.
    for (size_t i = 1; i < steps.size(); ++i) {
      const int64_t gap = steps[i] - steps[i - 1];
      EXPECT_TRUE(gap <= 3 || gap > p.recurrence_gap)
          << "token " << token.position << " gap " << gap << " at " << steps[i];
    }
    EXPECT_GE(Returns(steps, p.recurrence_gap), 2) << "token " << token.position;
  }
}

TEST(SyntheticTrace, NoRecurrenceScenarioHasNoTokenReturningAfterAGap) {
  SynthParams p = Params(Scenario::kNoRecurrence, 200, 300);
  p.recurrence_gap = 64;
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  const auto attention = AllMeanAttention(s.trace);
  const int64_t from = 3 * p.recent_window;
  for (int64_t position = 0; position < p.prompt_len; ++position) {
    const auto steps = ImportantSteps(s.trace, attention, from, position);
    EXPECT_EQ(Returns(steps, p.recurrence_gap), 0) << "token " << position;
  }
  // Heavy hitters are important at most steps throughout (query noise makes them dip for a
  // step now and then, never for W steps).
  for (int64_t hh : s.layout.heavy_hitters) {
    EXPECT_GT(static_cast<double>(ImportantSteps(s.trace, attention, from, hh).size()),
              0.6 * static_cast<double>(500 - from));
  }
}

TEST(SyntheticTrace, NeedleIsAttendedByExactlyOneLateQuery) {
  const SynthParams p = Params(Scenario::kNeedle, 400, 100);
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  ASSERT_EQ(s.layout.needles.size(), 4u);
  for (const NeedleToken& needle : s.layout.needles) {
    std::vector<int64_t> high;
    for (int64_t t = needle.position + 1; t < s.trace.meta().total_len; ++t) {
      if (MeanAttention(s.trace, t)(needle.position) > 0.1) high.push_back(t);
    }
    ASSERT_EQ(high.size(), 1u) << "needle " << needle.position;
    EXPECT_GE(high[0], p.prompt_len);
    EXPECT_EQ(high[0], needle.query_position);
  }
}

TEST(SyntheticTrace, ShiftedQueriesAttendElsewhereThanTheObservationWindow) {
  SynthParams p = Params(Scenario::kShiftedQueries, 500, 100);
  p.shifted = 16;
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  const int64_t candidates_end = p.prompt_len - p.observation_window;
  Eigen::VectorXf window_score = Eigen::VectorXf::Zero(candidates_end);
  Eigen::VectorXf decode_score = Eigen::VectorXf::Zero(candidates_end);
  for (int64_t t = candidates_end; t < p.prompt_len; ++t) {
    window_score += MeanAttention(s.trace, t).head(candidates_end);
  }
  for (int64_t t = p.prompt_len; t < s.trace.meta().total_len; ++t) {
    decode_score += MeanAttention(s.trace, t).head(candidates_end);
  }
  // Exclude sinks: both would keep them.
  const auto window_top = TopK(window_score, p.sinks, candidates_end, p.shifted);
  const auto decode_top = TopK(decode_score, p.sinks, candidates_end, p.shifted);
  const std::set<int64_t> window_set(window_top.begin(), window_top.end());
  int overlap = 0;
  for (int64_t id : decode_top) overlap += window_set.count(id) ? 1 : 0;
  EXPECT_LE(overlap, 2);
  // Not low by accident: each top-k is the set its queries were built to attend.
  const std::set<int64_t> decode_set(decode_top.begin(), decode_top.end());
  EXPECT_EQ(decode_set,
            std::set<int64_t>(s.layout.decode_targets.begin(), s.layout.decode_targets.end()));
  EXPECT_EQ(window_set,
            std::set<int64_t>(s.layout.window_targets.begin(), s.layout.window_targets.end()));
}

TEST(SyntheticTrace, MultiTurnSegmentMeanKeysClusterByTopic) {
  SynthParams p = Params(Scenario::kMultiTurn, 560, 40);
  p.topics = 3;
  p.turns = 9;
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  const auto& segments = s.trace.meta().segments;
  ASSERT_EQ(segments.size(), s.layout.segment_topics.size());
  ASSERT_EQ(segments.size(), 11u);  // 9 turns, question, answer
  for (int l = 0; l < s.trace.num_layers(); ++l) {
    for (int h = 0; h < s.trace.shape().kv_heads; ++h) {
      const auto keys = s.trace.Keys(l, h);
      std::vector<Eigen::RowVectorXf> means;
      std::map<int, Eigen::RowVectorXf> centroid_sum;
      std::map<int, int> centroid_count;
      for (size_t i = 0; i < segments.size(); ++i) {
        means.push_back(keys.middleRows(segments[i].begin, segments[i].end - segments[i].begin)
                            .colwise()
                            .mean());
        const int topic = s.layout.segment_topics[i];
        if (topic < 0) continue;
        if (!centroid_sum.count(topic)) centroid_sum[topic] = Eigen::RowVectorXf::Zero(64);
        centroid_sum[topic] += means.back();
        ++centroid_count[topic];
      }
      ASSERT_EQ(centroid_sum.size(), 3u);
      for (size_t i = 0; i < segments.size(); ++i) {
        const int topic = s.layout.segment_topics[i];
        if (topic < 0) continue;
        int nearest = -1;
        float best = 0.0f;
        for (const auto& [t, sum] : centroid_sum) {
          const float dist = (means[i] - sum / static_cast<float>(centroid_count[t])).squaredNorm();
          if (nearest < 0 || dist < best) {
            nearest = t;
            best = dist;
          }
        }
        EXPECT_EQ(nearest, topic) << "layer " << l << " head " << h << " segment " << i;
      }
    }
  }
}

TEST(SyntheticTrace, MultiTurnQuestionAttendsToItsTopic) {
  SynthParams p = Params(Scenario::kMultiTurn, 560, 40);
  p.topics = 3;
  p.turns = 9;
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  const auto& segments = s.trace.meta().segments;
  const int topic = s.layout.question_topic;
  ASSERT_GE(topic, 0);
  EXPECT_NE(s.trace.meta().source.find("question_topic=" + std::to_string(topic)),
            std::string::npos);
  std::vector<double> mass(3, 0.0);
  for (int64_t t = p.prompt_len - p.question_len; t < s.trace.meta().total_len; ++t) {
    const Eigen::VectorXf a = MeanAttention(s.trace, t);
    for (size_t i = 0; i < segments.size(); ++i) {
      const int segment_topic = s.layout.segment_topics[i];
      if (segment_topic < 0) continue;
      // The sinks sit in the first segment; their mass is topic-independent.
      const int64_t begin = std::max<int64_t>(segments[i].begin, p.sinks);
      mass[static_cast<size_t>(segment_topic)] += a.segment(begin, segments[i].end - begin).sum();
    }
  }
  for (int other = 0; other < 3; ++other) {
    if (other == topic) continue;
    EXPECT_GT(mass[static_cast<size_t>(topic)], 5.0 * mass[static_cast<size_t>(other)])
        << "topic " << topic << " vs " << other;
  }
}

TEST(SyntheticTrace, SameSeedIsBitwiseIdenticalOtherSeedDiffers) {
  const SynthParams p = Params(Scenario::kMixed, 300, 50, 11);
  const SynthTrace a = GenerateSynthetic(TestShape(), p);
  const SynthTrace b = GenerateSynthetic(TestShape(), p);
  EXPECT_EQ(a.trace.meta(), b.trace.meta());
  for (int l = 0; l < a.trace.num_layers(); ++l) EXPECT_EQ(a.trace.layer(l), b.trace.layer(l));

  const SynthTrace c = GenerateSynthetic(TestShape(), Params(Scenario::kMixed, 300, 50, 12));
  EXPECT_NE(a.trace.layer(0).keys, c.trace.layer(0).keys);
  EXPECT_NE(a.trace.meta().token_ids, c.trace.meta().token_ids);
}

// Work is split into (head, block of positions) items on any number of threads; the bits must
// not depend on that, nor on the order in which layers are generated. 1200 positions span
// several blocks.
TEST(SyntheticTrace, SameBitsForAnyThreadCountAndLayerOrder) {
  const SynthParams p = Params(Scenario::kMixed, 1100, 100, 5);
  const SynthTrace one = GenerateSynthetic(TestShape(), p, /*threads=*/1);
  for (int threads : {2, 3, 8}) {
    const SynthTrace many = GenerateSynthetic(TestShape(), p, threads);
    EXPECT_EQ(many.trace.meta(), one.trace.meta()) << threads << " threads";
    for (int l = 0; l < one.trace.num_layers(); ++l) {
      EXPECT_EQ(many.trace.layer(l), one.trace.layer(l)) << threads << " threads, layer " << l;
    }
  }
  const SynthGenerator generator(TestShape(), p, /*threads=*/4);
  EXPECT_EQ(generator.meta(), one.trace.meta());
  EXPECT_EQ(generator.Layer(1), one.trace.layer(1));  // layer 1 first
  LayerTensors reused = generator.Layer(1);           // buffers of the right shape, other data
  generator.Layer(0, &reused);
  EXPECT_EQ(reused, one.trace.layer(0));
}

TEST(SyntheticTrace, LayersAndHeadsDiffer) {
  const SynthParams p = Params(Scenario::kMixed, 300, 50);
  const SynthTrace s = GenerateSynthetic(TestShape(), p);
  std::vector<double> sink_mass;
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 8; ++h) {
      sink_mass.push_back(Attention(s.trace, l, h, 349).head(p.sinks).sum());
    }
  }
  const auto [lo, hi] = std::minmax_element(sink_mass.begin(), sink_mass.end());
  EXPECT_GT(*hi - *lo, 0.05);
}

TEST(SyntheticTrace, PresetShapesCutToFewLayersGiveValidTraces) {
  for (const std::string& name : models::ShapePresetNames()) {
    for (Scenario scenario : {Scenario::kMixed, Scenario::kMultiTurn}) {
      const models::ModelShape shape = models::WithLayers(models::ShapePreset(name), 1);
      const SynthTrace s = GenerateSynthetic(shape, Params(scenario, 300, 20));
      const TraceMeta& meta = s.trace.meta();
      EXPECT_EQ(meta.shape, shape);
      EXPECT_EQ(meta.prompt_len, 300);
      EXPECT_EQ(meta.total_len, 320);
      EXPECT_EQ(meta.token_ids.size(), 320u);
      EXPECT_EQ(meta.source.rfind(std::string("synthetic:") + ScenarioName(scenario), 0), 0u);
      ASSERT_EQ(s.trace.num_layers(), 1);
      const LayerTensors& layer = s.trace.layer(0);
      EXPECT_EQ(layer.queries.heads(), shape.q_heads);
      EXPECT_EQ(layer.keys.heads(), shape.kv_heads);
      EXPECT_EQ(layer.values.heads(), shape.kv_heads);
      EXPECT_EQ(layer.keys.positions(), 320);
      EXPECT_EQ(layer.queries.dim(), shape.head_dim);
      for (const HeadTensor* t : {&layer.queries, &layer.keys, &layer.values}) {
        EXPECT_TRUE(std::all_of(t->data(), t->data() + t->size(), [](float x) {
          return std::isfinite(x);
        })) << name;
      }
      for (const Segment& segment : meta.segments) {
        EXPECT_LT(segment.begin, segment.end);
        EXPECT_LE(segment.end, meta.total_len);
      }
    }
  }
}

void ExpectInputErrorNaming(const SynthParams& p, const std::string& argument) {
  try {
    GenerateSynthetic(TestShape(), p);
    ADD_FAILURE() << "expected an InputError naming " << argument;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(argument), std::string::npos) << e.what();
  }
}

TEST(SyntheticTrace, BadParamsNameTheArgument) {
  ExpectInputErrorNaming(Params(Scenario::kMixed, 0, 10), "--prompt");
  ExpectInputErrorNaming(Params(Scenario::kMixed, 300, -1), "--decode");
  SynthParams p = Params(Scenario::kMixed, 300, 10);
  p.heavy_hitters = 400;
  ExpectInputErrorNaming(p, "--heavy-hitters");
  p = Params(Scenario::kMixed, 300, 10);
  p.noise = -1.0;
  ExpectInputErrorNaming(p, "--noise");
  p = Params(Scenario::kMultiTurn, 300, 10);
  p.turns = 2;
  ExpectInputErrorNaming(p, "--turns");
  EXPECT_THROW(ParseScenario("bogus"), InputError);
  EXPECT_EQ(ParseScenario("shifted-queries"), Scenario::kShiftedQueries);
}

}  // namespace
}  // namespace kvsim::traces::synthetic
