#include "traces/synthetic/synthetic.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <Eigen/Dense>
#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <numbers>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/tensor.h"

namespace kvsim::traces::synthetic {
namespace {

constexpr std::array<std::pair<Scenario, const char*>, 6> kScenarioNames = {{
    {Scenario::kMixed, "mixed"},
    {Scenario::kRecurrence, "recurrence"},
    {Scenario::kNoRecurrence, "no-recurrence"},
    {Scenario::kShiftedQueries, "shifted-queries"},
    {Scenario::kNeedle, "needle"},
    {Scenario::kMultiTurn, "multi-turn"},
}};

// Key coefficients (logit units) of each structure; the query coefficient is gain / these.
// Recency keys are small so that segment mean keys are dominated by their topic; topic keys
// are large for the same reason (EpiCache clusters segments by mean key).
constexpr float kRecencyKey = 0.3f;
constexpr float kTopicKey = 3.0f;
// Recency planes (random Fourier features) when the head dimension allows; fewer give a
// noisier kernel, never fewer than kMinFrequencies.
constexpr int kMaxFrequencies = 16;
constexpr int kMinFrequencies = 4;
constexpr int32_t kVocabSize = 32000;  // Llama-2 / Mistral vocabulary size

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Unit 0 is the layout; unit 1 + layer * kv_heads + kv_head one (layer, KV head).
uint64_t UnitSeed(uint64_t seed, uint64_t unit) { return SplitMix64(seed ^ SplitMix64(unit)); }

// mt19937_64 with portable distribution math (libstdc++'s distributions are not specified
// bit for bit across library versions).
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  int64_t Index(int64_t n) {
    return std::min(n - 1, static_cast<int64_t>(Uniform() * static_cast<double>(n)));
  }
  double Gaussian() {
    const double u1 = (static_cast<double>(engine_() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  // n samples of N(0, scale^2); Box-Muller on two 32-bit halves of one draw.
  void FillGaussian(float* out, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i += 2) {
      const uint64_t x = engine_();
      const float u1 = (static_cast<float>(x >> 40) + 0.5f) * 0x1.0p-24f;
      const float u2 = static_cast<float>(x & 0xffffffULL) * 0x1.0p-24f;
      const float r = scale * std::sqrt(-2.0f * std::log(u1));
      const float angle = 2.0f * std::numbers::pi_v<float> * u2;
      out[i] = r * std::cos(angle);
      if (i + 1 < n) out[i + 1] = r * std::sin(angle);
    }
  }

 private:
  std::mt19937_64 engine_;
};

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

int EffectiveTurns(const SynthParams& p) {
  return p.topics > 0 && p.turns == 0 ? 2 * p.topics : p.turns;
}

// Upper end of the positions far enough before `limit` that recency cannot explain attention
// to them; `limit` itself if the prompt is too short for that.
int64_t FarBefore(int64_t limit, const SynthParams& p, int count) {
  const int64_t far = limit - 2 * static_cast<int64_t>(p.recent_window);
  return far - p.sinks >= 2 * static_cast<int64_t>(count) ? far : limit;
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

// Column indices of each structure in the coefficient matrices (-1: absent).
struct Directions {
  int sink = -1;
  int heavy = -1;
  int window = -1;
  int decode = -1;
  int recency = -1;  // 2 * frequencies columns: cos, sin per frequency
  int frequencies = 0;
  int recurring = -1;
  int needle = -1;
  int topic = -1;
  int count = 0;
  bool orthogonal = true;  // directions are axes; otherwise random unit vectors
  int base_begin = 0;      // noise lives in dims [base_begin, d)
};

Directions AllocateDirections(const SynthParams& p, int head_dim) {
  Directions dirs;
  auto take = [&](int n) {
    const int first = dirs.count;
    dirs.count += n;
    return first;
  };
  if (p.sinks > 0) dirs.sink = take(1);
  if (p.heavy_hitters > 0) dirs.heavy = take(1);
  if (p.shifted > 0) {
    dirs.window = take(1);
    dirs.decode = take(1);
  }
  if (p.recurring > 0) dirs.recurring = take(p.recurring);
  if (p.needles > 0) dirs.needle = take(p.needles);
  if (p.topics > 0) dirs.topic = take(p.topics);
  if (p.recent_window > 0) {
    int frequencies = kMaxFrequencies;
    while (frequencies > kMinFrequencies && dirs.count + 2 * frequencies + 1 > head_dim) {
      --frequencies;
    }
    dirs.frequencies = frequencies;
    dirs.recency = take(2 * frequencies);
  }
  // At least one noise dimension keeps untargeted logits random.
  dirs.orthogonal = dirs.count + 1 <= head_dim;
  dirs.base_begin = dirs.orthogonal ? dirs.count : 0;
  return dirs;
}

// Per-structure strength factors of one head.
struct HeadFactors {
  double sink, heavy, recency, recurring, needle, shifted, topic;
  static HeadFactors Draw(Rng& rng, double lo, double hi) {
    HeadFactors f;
    for (double* x :
         {&f.sink, &f.heavy, &f.recency, &f.recurring, &f.needle, &f.shifted, &f.topic}) {
      *x = rng.Uniform(lo, hi);
    }
    return f;
  }
};

struct Context {
  const SynthParams& params;
  const SynthLayout& layout;
  const std::vector<Segment>& segments;
  const Directions& dirs;
  int64_t total;
  int head_dim;
};

// Fills keys and values of `kv_head` and the queries of its group in `layer`.
void GenerateUnit(const Context& c, uint64_t seed, int kv_head, int group, LayerTensors& layer) {
  const SynthParams& p = c.params;
  const int d = c.head_dim;
  const int64_t total = c.total;
  const Directions& dirs = c.dirs;
  Rng rng(seed);

  // Random rotation (Q of a Gaussian matrix's QR) and the directions in the rotated space.
  RowMatrixXf gaussian(d, d);
  rng.FillGaussian(gaussian.data(), static_cast<int64_t>(gaussian.size()), 1.0f);
  const Eigen::MatrixXf rotation_cm =
      Eigen::HouseholderQR<Eigen::MatrixXf>(gaussian).householderQ();
  const RowMatrixXf rotation_t = rotation_cm.transpose();
  RowMatrixXf directions = RowMatrixXf::Zero(dirs.count, d);
  if (dirs.orthogonal) {
    directions.leftCols(dirs.count).setIdentity();
  } else {
    rng.FillGaussian(directions.data(), static_cast<int64_t>(directions.size()), 1.0f);
    directions.rowwise().normalize();
  }
  const float scale = std::pow(static_cast<float>(d), 0.25f);
  const RowMatrixXf projection = directions * rotation_t * scale;  // count x d
  const int base_dims = d - dirs.base_begin;
  const RowMatrixXf base_projection = rotation_t.bottomRows(base_dims) * scale;

  const HeadFactors head = HeadFactors::Draw(rng, 0.85, 1.15);
  std::vector<double> omega(static_cast<size_t>(dirs.frequencies));
  for (double& w : omega) w = rng.Gaussian() / p.recent_window;

  // Keys.
  RowMatrixXf key_coef = RowMatrixXf::Zero(total, dirs.count);
  for (int64_t s : c.layout.sinks) key_coef(s, dirs.sink) = 1.0f;
  for (int64_t s : c.layout.heavy_hitters) {
    key_coef(s, dirs.heavy) = static_cast<float>(rng.Uniform(0.9, 1.1));
  }
  for (int64_t s : c.layout.window_targets) {
    key_coef(s, dirs.window) = static_cast<float>(rng.Uniform(0.9, 1.1));
  }
  for (int64_t s : c.layout.decode_targets) {
    key_coef(s, dirs.decode) = static_cast<float>(rng.Uniform(0.9, 1.1));
  }
  for (size_t i = 0; i < c.layout.recurring.size(); ++i) {
    key_coef(c.layout.recurring[i].position, dirs.recurring + static_cast<int>(i)) = 1.0f;
  }
  for (size_t i = 0; i < c.layout.needles.size(); ++i) {
    key_coef(c.layout.needles[i].position, dirs.needle + static_cast<int>(i)) = 1.0f;
  }
  for (size_t i = 0; i < c.segments.size(); ++i) {
    const int topic = c.layout.segment_topics[i];
    if (topic < 0) continue;
    for (int64_t s = c.segments[i].begin; s < c.segments[i].end; ++s) {
      key_coef(s, dirs.topic + topic) = kTopicKey * static_cast<float>(rng.Uniform(0.9, 1.1));
    }
  }
  for (int f = 0; f < dirs.frequencies; ++f) {
    for (int64_t s = 0; s < total; ++s) {
      const double angle = omega[static_cast<size_t>(f)] * static_cast<double>(s);
      key_coef(s, dirs.recency + 2 * f) = kRecencyKey * static_cast<float>(std::cos(angle));
      key_coef(s, dirs.recency + 2 * f + 1) = kRecencyKey * static_cast<float>(std::sin(angle));
    }
  }
  RowMatrixXf noise(total, base_dims);
  rng.FillGaussian(noise.data(), static_cast<int64_t>(noise.size()), 1.0f);
  MatrixMap keys = layer.keys.Head(kv_head);
  keys.noalias() = key_coef * projection;
  keys.noalias() += noise * base_projection;

  MatrixMap values = layer.values.Head(kv_head);
  rng.FillGaussian(values.data(), static_cast<int64_t>(values.size()), 1.0f);

  // Queries: coefficient gain * factors / key coefficient on each attended direction.
  const float query_noise = static_cast<float>(p.noise / std::sqrt(static_cast<double>(base_dims)));
  const int64_t window_begin = p.prompt_len - p.observation_window;
  const int64_t question_begin = p.prompt_len - p.question_len;
  const int64_t period = static_cast<int64_t>(p.recurrence_on) + p.recurrence_gap;
  for (int j = 0; j < group; ++j) {
    const HeadFactors q = HeadFactors::Draw(rng, 0.9, 1.1);
    auto gain = [](double g, double f1, double f2) { return static_cast<float>(g * f1 * f2); };
    RowMatrixXf query_coef = RowMatrixXf::Zero(total, dirs.count);
    if (dirs.sink >= 0) query_coef.col(dirs.sink).setConstant(gain(p.sink_gain, head.sink, q.sink));
    if (dirs.heavy >= 0) {
      query_coef.col(dirs.heavy).setConstant(gain(p.heavy_gain, head.heavy, q.heavy));
    }
    if (dirs.window >= 0) {
      const float g = gain(p.shifted_gain, head.shifted, q.shifted);
      for (int64_t t = std::max<int64_t>(window_begin, 0); t < p.prompt_len; ++t) {
        query_coef(t, dirs.window) = g;
      }
      for (int64_t t = p.prompt_len; t < total; ++t) query_coef(t, dirs.decode) = g;
    }
    const float recurring_gain = gain(p.recurrence_gain, head.recurring, q.recurring);
    for (size_t i = 0; i < c.layout.recurring.size(); ++i) {
      const RecurringToken& token = c.layout.recurring[i];
      for (int64_t t = token.position + 1; t < total; ++t) {
        if ((t + token.phase) % period < p.recurrence_on) {
          query_coef(t, dirs.recurring + static_cast<int>(i)) = recurring_gain;
        }
      }
    }
    for (size_t i = 0; i < c.layout.needles.size(); ++i) {
      query_coef(c.layout.needles[i].query_position, dirs.needle + static_cast<int>(i)) =
          gain(p.needle_gain, head.needle, q.needle);
    }
    if (c.layout.question_topic >= 0) {
      const float g = gain(p.topic_gain, head.topic, q.topic) / kTopicKey;
      for (int64_t t = question_begin; t < total; ++t) {
        query_coef(t, dirs.topic + c.layout.question_topic) = g;
      }
    }
    if (dirs.frequencies > 0) {
      const float g = gain(p.recent_gain, head.recency, q.recency) /
                      (kRecencyKey * static_cast<float>(dirs.frequencies));
      for (int f = 0; f < dirs.frequencies; ++f) {
        for (int64_t t = 0; t < total; ++t) {
          const double angle = omega[static_cast<size_t>(f)] * static_cast<double>(t);
          query_coef(t, dirs.recency + 2 * f) = g * static_cast<float>(std::cos(angle));
          query_coef(t, dirs.recency + 2 * f + 1) = g * static_cast<float>(std::sin(angle));
        }
      }
    }
    rng.FillGaussian(noise.data(), static_cast<int64_t>(noise.size()), query_noise);
    MatrixMap queries = layer.queries.Head(kv_head * group + j);
    queries.noalias() = query_coef * projection;
    queries.noalias() += noise * base_projection;
  }
}

std::string Describe(const SynthParams& p, const SynthLayout& layout) {
  std::string source = fmt::format(
      "synthetic:{} seed={} prompt={} decode={} noise={} sinks={} sink_gain={} recent_window={} "
      "recent_gain={} heavy_hitters={} heavy_gain={} recurring={} recurrence_gap={} "
      "recurrence_on={} recurrence_gain={} needles={} needle_gain={} shifted={} "
      "observation_window={} shifted_gain={} topics={} turns={} question_len={} topic_gain={}",
      ScenarioName(p.scenario), p.seed, p.prompt_len, p.decode_len, p.noise, p.sinks, p.sink_gain,
      p.recent_window, p.recent_gain, p.heavy_hitters, p.heavy_gain, p.recurring, p.recurrence_gap,
      p.recurrence_on, p.recurrence_gain, p.needles, p.needle_gain, p.shifted, p.observation_window,
      p.shifted_gain, p.topics, EffectiveTurns(p), p.question_len, p.topic_gain);
  if (layout.question_topic >= 0) {
    source += fmt::format(" segment_topics={} question_topic={}",
                          fmt::join(layout.segment_topics, ","), layout.question_topic);
  }
  return source;
}

}  // namespace

const char* ScenarioName(Scenario scenario) {
  for (const auto& [value, name] : kScenarioNames) {
    if (value == scenario) return name;
  }
  KVSIM_ASSERT(false, "unknown scenario {}", static_cast<int>(scenario));
  return "";
}

std::vector<std::string> ScenarioNames() {
  std::vector<std::string> names;
  for (const auto& entry : kScenarioNames) names.emplace_back(entry.second);
  return names;
}

Scenario ParseScenario(std::string_view name) {
  for (const auto& [value, scenario_name] : kScenarioNames) {
    if (name == scenario_name) return value;
  }
  ThrowInputError("--scenario '{}' is not a known scenario: expected one of {}", name,
                  fmt::join(ScenarioNames(), ", "));
}

SynthParams ScenarioParams(Scenario scenario) {
  SynthParams p;
  p.scenario = scenario;
  p.sinks = 4;
  p.recent_window = 64;
  switch (scenario) {
    case Scenario::kMixed:
      p.heavy_hitters = 8;
      p.recurring = 4;
      p.needles = 1;
      break;
    case Scenario::kRecurrence:
      p.recurring = 16;
      break;
    case Scenario::kNoRecurrence:
      p.heavy_hitters = 16;
      p.heavy_gain = p.recurrence_gain;
      break;
    case Scenario::kShiftedQueries:
      p.sinks = 2;
      p.recent_window = 32;
      p.shifted = 32;
      break;
    case Scenario::kNeedle:
      p.needles = 4;
      break;
    case Scenario::kMultiTurn:
      p.recent_window = 32;
      p.topics = 4;
      break;
  }
  return p;
}

void ValidateSynthParams(const SynthParams& p) {
  if (p.prompt_len < 1) ThrowInputError("--prompt {}: expected >= 1", p.prompt_len);
  if (p.decode_len < 0) ThrowInputError("--decode {}: expected >= 0", p.decode_len);
  auto non_negative = [](int64_t value, const char* argument) {
    if (value < 0) ThrowInputError("{} {}: expected >= 0", argument, value);
  };
  non_negative(p.sinks, "--sinks");
  non_negative(p.recent_window, "--recent-window");
  non_negative(p.heavy_hitters, "--heavy-hitters");
  non_negative(p.recurring, "--recurring");
  non_negative(p.needles, "--needles");
  non_negative(p.shifted, "--shifted");
  non_negative(p.topics, "--topics");
  non_negative(p.turns, "--turns");
  auto gain = [](double value, const char* argument) {
    if (!std::isfinite(value) || value < 0.0) {
      ThrowInputError("{} {}: expected a finite value >= 0", argument, value);
    }
  };
  gain(p.noise, "--noise");
  gain(p.sink_gain, "--sink-gain");
  gain(p.recent_gain, "--recent-gain");
  gain(p.heavy_gain, "--heavy-gain");
  gain(p.recurrence_gain, "--recurrence-gain");
  gain(p.needle_gain, "--needle-gain");
  gain(p.shifted_gain, "--shifted-gain");
  gain(p.topic_gain, "--topic-gain");
  if (p.sinks > p.prompt_len) {
    ThrowInputError("--sinks {}: expected <= --prompt ({})", p.sinks, p.prompt_len);
  }
  if (p.recurring > 0) {
    if (p.recurrence_gap < 1) {
      ThrowInputError("--recurrence-gap {}: expected >= 1", p.recurrence_gap);
    }
    if (p.recurrence_on < 1) ThrowInputError("--recurrence-on {}: expected >= 1", p.recurrence_on);
  }
  if (p.shifted > 0 && (p.observation_window < 1 || p.observation_window >= p.prompt_len)) {
    ThrowInputError("--observation-window {}: expected 1..{} (below --prompt)",
                    p.observation_window, p.prompt_len - 1);
  }
  if (p.topics > 0) {
    const int turns = EffectiveTurns(p);
    if (turns < p.topics) {
      ThrowInputError("--turns {}: expected >= --topics ({})", turns, p.topics);
    }
    if (p.question_len < 1) ThrowInputError("--question-len {}: expected >= 1", p.question_len);
    if (p.prompt_len - p.question_len < 2LL * turns) {
      ThrowInputError(
          "--prompt {}: too short for {} turns of >= 2 positions plus a question of {} "
          "(--question-len)",
          p.prompt_len, turns, p.question_len);
    }
  }
}

SynthTrace GenerateSynthetic(const models::ModelShape& shape, const SynthParams& params) {
  shape.Validate("kvsim synth --shape");
  ValidateSynthParams(params);
  const int64_t total = params.prompt_len + params.decode_len;

  SynthTrace out;
  TraceMeta meta;
  meta.shape = shape;
  meta.prompt_len = params.prompt_len;
  meta.total_len = total;
  Rng layout_rng(UnitSeed(params.seed, 0));
  out.layout = BuildLayout(params, layout_rng, meta.segments);
  meta.token_ids.resize(static_cast<size_t>(total));
  for (int32_t& id : meta.token_ids) id = static_cast<int32_t>(layout_rng.Index(kVocabSize));
  meta.source = Describe(params, out.layout);

  const Directions dirs = AllocateDirections(params, shape.head_dim);
  const Context context{params, out.layout, meta.segments, dirs, total, shape.head_dim};
  std::vector<LayerTensors> layers(static_cast<size_t>(shape.layers));
  for (LayerTensors& layer : layers) {
    layer.queries = HeadTensor(shape.q_heads, total, shape.head_dim);
    layer.keys = HeadTensor(shape.kv_heads, total, shape.head_dim);
    layer.values = HeadTensor(shape.kv_heads, total, shape.head_dim);
  }
  // Units (layer, KV head) write disjoint heads and draw from their own seed, so the result is
  // the same whatever the thread count; thread k takes units k, k + n, k + 2n, ...
  const int units = shape.layers * shape.kv_heads;
  const int threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, units);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  {
    std::vector<std::jthread> workers;
    for (int k = 0; k < threads; ++k) {
      workers.emplace_back([&, k] {
        try {
          for (int unit = k; unit < units; unit += threads) {
            const int l = unit / shape.kv_heads;
            GenerateUnit(context, UnitSeed(params.seed, 1 + static_cast<uint64_t>(unit)),
                         unit % shape.kv_heads, shape.GroupSize(), layers[static_cast<size_t>(l)]);
          }
        } catch (...) {
          errors[static_cast<size_t>(k)] = std::current_exception();
        }
      });
    }
  }
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  out.trace = Trace(std::move(meta), std::move(layers));
  return out;
}

}  // namespace kvsim::traces::synthetic
