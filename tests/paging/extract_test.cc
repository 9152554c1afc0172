// Request extraction against a brute-force recomputation of the attention and of each rule.
#include "sim/paging/extract.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "common/error.h"

namespace kvsim::paging {
namespace {

traces::Trace RandomTrace(uint64_t seed) {
  traces::TraceMeta meta;
  meta.shape = {.name = "tiny",
                .layers = 2,
                .q_heads = 4,
                .kv_heads = 2,
                .head_dim = 8,
                .rope_theta = 10000.0,
                .kv_bytes_per_element = 2};
  meta.prompt_len = 6;
  meta.total_len = 22;
  meta.storage = traces::StorageType::kFloat32;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<traces::LayerTensors> layers(2);
  for (auto& layer : layers) {
    layer.queries = HeadTensor(4, meta.total_len, 8);
    layer.keys = HeadTensor(2, meta.total_len, 8);
    layer.values = HeadTensor(2, meta.total_len, 8);
    for (float* t : {layer.queries.data(), layer.keys.data()}) {
      const size_t n = t == layer.queries.data() ? layer.queries.size() : layer.keys.size();
      for (size_t i = 0; i < n; ++i) t[i] = normal(rng);
    }
  }
  return traces::Trace(meta, std::move(layers));
}

// Grouped weights of decode position t for (layer, kv_head), computed in double by loops.
std::vector<double> BruteWeights(
    const traces::Trace& trace, int l, int h, int64_t t, HeadGrouping grouping) {
  const int g = trace.shape().GroupSize();
  const int d = trace.shape().head_dim;
  std::vector<double> grouped(static_cast<size_t>(t + 1), 0.0);
  for (int q = h * g; q < h * g + g; ++q) {
    std::vector<double> logits(static_cast<size_t>(t + 1));
    for (int64_t j = 0; j <= t; ++j) {
      double dot = 0;
      for (int c = 0; c < d; ++c) {
        dot += static_cast<double>(trace.Queries(l, q)(t, c)) * trace.Keys(l, h)(j, c);
      }
      logits[j] = dot / std::sqrt(static_cast<double>(d));
    }
    const double max = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (double& x : logits) sum += (x = std::exp(x - max));
    for (int64_t j = 0; j <= t; ++j) {
      const double w = logits[j] / sum;
      grouped[j] = grouping == HeadGrouping::kSum ? grouped[j] + w : std::max(grouped[j], w);
    }
  }
  return grouped;
}

// The rule applied by sorting everything (no nth_element, no early exits).
std::set<int64_t> BruteSelect(const std::vector<double>& w, const ExtractOptions& o) {
  std::vector<int64_t> order(w.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return w[a] > w[b]; });
  std::set<int64_t> out;
  const auto n = static_cast<double>(w.size());
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  double covered = 0;
  for (size_t r = 0; r < order.size(); ++r) {
    const int64_t j = order[r];
    switch (o.rule) {
      case RequestRule::kTopK:
        if (static_cast<int64_t>(r) < o.top_k) out.insert(j);
        break;
      case RequestRule::kThreshold:
        if (w[j] >= o.threshold) out.insert(j);
        break;
      case RequestRule::kRelative:
        if (w[j] >= o.threshold / n) out.insert(j);
        break;
      case RequestRule::kCoverage:
        if (covered < o.coverage * total) out.insert(j);
        covered += w[j];
        break;
    }
  }
  return out;
}

void ExpectMatchesBruteForce(const ExtractOptions& options) {
  const traces::Trace trace = RandomTrace(5);
  const std::vector<RequestSequence> streams = ExtractRequests(trace, options);
  ASSERT_EQ(streams.size(), 4u + (options.streams == StreamSet::kBoth ? 1u : 0u));
  std::vector<std::set<uint64_t>> merged(16);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      const RequestSequence& seq = streams[static_cast<size_t>(l * 2 + h)];
      EXPECT_EQ(seq.stream, fmt::format("L{}H{}", l, h));
      EXPECT_EQ(seq.page_bytes, options.page_tokens * 2 * 8 * 2);
      ASSERT_EQ(seq.steps(), 16);
      for (int64_t s = 0; s < 16; ++s) {
        const int64_t t = 6 + s;
        EXPECT_EQ(seq.step_position[s], t);
        std::set<uint64_t> pages;
        for (int64_t j : BruteSelect(BruteWeights(trace, l, h, t, options.grouping), options)) {
          pages.insert(static_cast<uint64_t>(j / options.page_tokens));
        }
        const std::set<uint64_t> got(seq.pages.begin() + seq.step_begin[s],
                                     seq.pages.begin() + seq.step_begin[s + 1]);
        EXPECT_EQ(got, pages) << seq.stream << " t=" << t;
        merged[s].insert(pages.begin(), pages.end());
      }
    }
  }
  if (options.streams == StreamSet::kBoth) {
    const RequestSequence& m = streams.back();
    EXPECT_EQ(m.stream, "merged");
    EXPECT_EQ(m.page_bytes, options.page_tokens * 2 * 8 * 2 * 2 * 2);
    for (int64_t s = 0; s < 16; ++s) {
      EXPECT_EQ(std::set<uint64_t>(m.pages.begin() + m.step_begin[s],
                                   m.pages.begin() + m.step_begin[s + 1]),
                merged[s]);
    }
  }
}

TEST(ExtractRequests, TopKMatchesBruteForce) {
  ExtractOptions o;
  o.top_k = 4;
  ExpectMatchesBruteForce(o);
  o.grouping = HeadGrouping::kSum;
  o.page_tokens = 3;
  o.streams = StreamSet::kBoth;
  ExpectMatchesBruteForce(o);
}

TEST(ExtractRequests, ThresholdsMatchBruteForce) {
  ExtractOptions o;
  o.rule = RequestRule::kThreshold;
  o.threshold = 0.08;
  ExpectMatchesBruteForce(o);
  o.rule = RequestRule::kRelative;
  o.threshold = 1.0;
  o.grouping = HeadGrouping::kSum;
  o.streams = StreamSet::kBoth;
  ExpectMatchesBruteForce(o);
}

TEST(ExtractRequests, CoverageMatchesBruteForce) {
  ExtractOptions o;
  o.rule = RequestRule::kCoverage;
  o.coverage = 0.8;
  o.page_tokens = 4;
  ExpectMatchesBruteForce(o);
}

TEST(ExtractRequests, ParsesRulesAndRejectsBadOnes) {
  ExtractOptions o;
  ParseRequestRule("coverage:0.95", "--rule", o);
  EXPECT_EQ(o.rule, RequestRule::kCoverage);
  EXPECT_DOUBLE_EQ(o.coverage, 0.95);
  ParseRequestRule("topk:64", "--rule", o);
  EXPECT_EQ(o.top_k, 64);
  for (const char* bad :
       {"topk", "topk:0", "topk:2.5", "coverage:1.5", "mass:0.3", "relative:-1"}) {
    try {
      ParseRequestRule(bad, "--rule", o);
      FAIL() << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(fmt::format("--rule '{}", bad)), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace kvsim::paging
