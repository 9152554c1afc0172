#include "traces/synthetic/layout.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace kvsim::traces::synthetic {
namespace {

// Picks `count` distinct positions of [lo, hi) not yet in `used` (and marks them), sorted.
std::vector<int64_t> PickDistinct(
    Rng& rng, int64_t lo, int64_t hi, int count, std::vector<char>& used, const char* argument) {
  std::vector<int64_t> free;
  for (int64_t p = std::max<int64_t>(lo, 0); p < hi; ++p) {
    if (!used[static_cast<size_t>(p)]) free.push_back(p);
  }
  if (static_cast<int64_t>(free.size()) < count) {
    ThrowInputError(
        "{} {}: only {} free prompt positions in [{}, {}) to place them; raise --prompt", argument,
        count, free.size(), lo, hi);
  }
  for (int i = 0; i < count; ++i) {
    const int64_t j = i + rng.Index(static_cast<int64_t>(free.size()) - i);
    std::swap(free[static_cast<size_t>(i)], free[static_cast<size_t>(j)]);
  }
  free.resize(static_cast<size_t>(count));
  std::sort(free.begin(), free.end());
  for (int64_t p : free) used[static_cast<size_t>(p)] = 1;
  return free;
}

// Upper end of the positions far enough before `limit` that recency cannot explain attention
// to them; `limit` itself if the prompt is too short for that.
int64_t FarBefore(int64_t limit, const SynthParams& p, int count) {
  const int64_t far = limit - 2 * static_cast<int64_t>(p.recent_window);
  return far - p.sinks >= 2 * static_cast<int64_t>(count) ? far : limit;
}

}  // namespace

int EffectiveTurns(const SynthParams& p) {
  return p.topics > 0 && p.turns == 0 ? 2 * p.topics : p.turns;
}

SynthLayout BuildLayout(const SynthParams& p, Rng& rng, std::vector<Segment>& segments) {
  const int64_t total = p.prompt_len + p.decode_len;
  SynthLayout layout;
  std::vector<char> used(static_cast<size_t>(total), 0);
  for (int64_t s = 0; s < p.sinks; ++s) {
    layout.sinks.push_back(s);
    used[static_cast<size_t>(s)] = 1;
  }
  if (p.recurring > 0) {
    const int64_t period = p.recurrence_on + p.recurrence_gap;
    for (int64_t pos : PickDistinct(rng, p.sinks, FarBefore(p.prompt_len, p, p.recurring),
                                    p.recurring, used, "--recurring")) {
      layout.recurring.push_back({pos, rng.Index(period)});
    }
  }
  if (p.needles > 0) {
    const int64_t late_begin = total - std::max<int64_t>(p.needles, (p.decode_len + 1) / 2);
    const int64_t hi = FarBefore(std::min(p.prompt_len, late_begin), p, p.needles);
    const auto positions = PickDistinct(rng, p.sinks, hi, p.needles, used, "--needles");
    std::vector<char> queried(static_cast<size_t>(total), 0);
    const auto queries = PickDistinct(rng, std::max(late_begin, positions.back() + 1), total,
                                      p.needles, queried, "--needles");
    for (size_t i = 0; i < positions.size(); ++i) {
      layout.needles.push_back({positions[i], queries[i]});
    }
  }
  if (p.shifted > 0) {
    const int64_t hi = FarBefore(p.prompt_len - p.observation_window, p, 2 * p.shifted);
    layout.window_targets = PickDistinct(rng, p.sinks, hi, p.shifted, used, "--shifted");
    layout.decode_targets = PickDistinct(rng, p.sinks, hi, p.shifted, used, "--shifted");
  }
  if (p.heavy_hitters > 0) {
    layout.heavy_hitters =
        PickDistinct(rng, p.sinks, p.prompt_len, p.heavy_hitters, used, "--heavy-hitters");
  }
  if (p.topics > 0) {
    const int turns = EffectiveTurns(p);
    const int64_t body = p.prompt_len - p.question_len;
    // Segment lengths vary by +-25% around body / turns.
    std::vector<double> cumulative(static_cast<size_t>(turns) + 1, 0.0);
    for (int i = 0; i < turns; ++i) {
      cumulative[static_cast<size_t>(i) + 1] =
          cumulative[static_cast<size_t>(i)] + rng.Uniform(0.75, 1.25);
    }
    // Every topic appears at least once; the order is shuffled.
    std::vector<int> topics(static_cast<size_t>(turns));
    for (int i = 0; i < turns; ++i) {
      topics[static_cast<size_t>(i)] = i < p.topics ? i : static_cast<int>(rng.Index(p.topics));
    }
    for (int i = turns - 1; i > 0; --i) {
      std::swap(topics[static_cast<size_t>(i)], topics[static_cast<size_t>(rng.Index(i + 1))]);
    }
    int64_t begin = 0;
    for (int i = 0; i < turns; ++i) {
      int64_t end = i + 1 == turns
                        ? body
                        : static_cast<int64_t>(std::llround(static_cast<double>(body) *
                                                            cumulative[static_cast<size_t>(i) + 1] /
                                                            cumulative.back()));
      end = std::clamp(end, begin + 1, body - (turns - i - 1));
      segments.push_back({begin, end, i / 2, i % 2 == 0 ? "user" : "assistant"});
      layout.segment_topics.push_back(topics[static_cast<size_t>(i)]);
      begin = end;
    }
    const int question_turn = (turns + 1) / 2;
    segments.push_back({body, p.prompt_len, question_turn, "user"});
    layout.segment_topics.push_back(-1);
    if (p.decode_len > 0) {
      segments.push_back({p.prompt_len, total, question_turn, "assistant"});
      layout.segment_topics.push_back(-1);
    }
    layout.question_topic = static_cast<int>(rng.Index(p.topics));
  }
  return layout;
}

}  // namespace kvsim::traces::synthetic
