#include "traces/synthetic/synthetic.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <exception>
#include <functional>
#include <thread>

#include "common/error.h"
#include "traces/synthetic/heads.h"
#include "traces/synthetic/layout.h"
#include "traces/synthetic/random.h"

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

constexpr int32_t kVocabSize = 32000;  // Llama-2 / Mistral vocabulary size

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

namespace {

// Positions per work item: large enough that the projection is an efficient matrix product,
// small enough that a layer splits into many items. Part of the definition of the numbers
// (recency features restart from an exact angle at each block), so not a tuning knob.
constexpr int64_t kBlockPositions = 512;

// Runs fn(i) for every i in [0, n) on up to `threads` threads, each taking the next index.
// Callers make every i write its own outputs, so the result does not depend on which thread
// ran which index. Rethrows the first exception (by index) after all threads stop.
void ParallelFor(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  const int workers = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1)));
  if (workers == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::pair<int64_t, std::exception_ptr>> errors(static_cast<size_t>(workers));
  {
    std::vector<std::jthread> pool;
    for (int k = 0; k < workers; ++k) {
      pool.emplace_back([&, k] {
        for (int64_t i = next++; i < n; i = next++) {
          try {
            fn(i);
          } catch (...) {
            errors[static_cast<size_t>(k)] = {i, std::current_exception()};
            next = n;  // stop handing out work
            return;
          }
        }
      });
    }
  }
  const auto first = std::min_element(
      errors.begin(), errors.end(),
      [](const auto& a, const auto& b) { return a.second && (!b.second || a.first < b.first); });
  if (first->second) std::rethrow_exception(first->second);
}

}  // namespace

struct SynthGenerator::State {
  State(const models::ModelShape& shape, const SynthParams& p, int thread_count)
      : params(p), threads(thread_count) {
    shape.Validate("kvsim synth --shape");
    ValidateSynthParams(params);
    const int64_t total = params.prompt_len + params.decode_len;
    meta.shape = shape;
    meta.prompt_len = params.prompt_len;
    meta.total_len = total;
    // The layout draws first from its own sequential stream (unit 0 of the seed).
    Rng layout_rng(SplitMix64(params.seed ^ SplitMix64(0)));
    layout = BuildLayout(params, layout_rng, meta.segments);
    meta.token_ids.resize(static_cast<size_t>(total));
    for (int32_t& id : meta.token_ids) id = static_cast<int32_t>(layout_rng.Index(kVocabSize));
    meta.source = Describe(params, layout);
    dirs = AllocateDirections(params, shape.head_dim);
    if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  }

  Context context() const {
    return {params, layout, meta.segments, dirs, meta.total_len, meta.shape.head_dim};
  }

  SynthParams params;
  TraceMeta meta;
  SynthLayout layout;
  Directions dirs;
  int threads;
};

SynthGenerator::SynthGenerator(const models::ModelShape& shape,
                               const SynthParams& params,
                               int threads)
    : state_(std::make_unique<State>(shape, params, threads)) {}
SynthGenerator::~SynthGenerator() = default;
SynthGenerator::SynthGenerator(SynthGenerator&&) noexcept = default;
SynthGenerator& SynthGenerator::operator=(SynthGenerator&&) noexcept = default;

const TraceMeta& SynthGenerator::meta() const { return state_->meta; }
const SynthLayout& SynthGenerator::layout() const { return state_->layout; }

LayerTensors SynthGenerator::Layer(int layer) const {
  LayerTensors out;
  Layer(layer, &out);
  return out;
}

void SynthGenerator::Layer(int layer, LayerTensors* out_ptr) const {
  const State& s = *state_;
  LayerTensors& out = *out_ptr;
  const models::ModelShape& shape = s.meta.shape;
  KVSIM_ASSERT(layer >= 0 && layer < shape.layers, "layer {} out of range [0, {})", layer,
               shape.layers);
  const Context context = s.context();
  const uint64_t seed = s.params.seed;
  std::vector<KvHeadSetup> kv(static_cast<size_t>(shape.kv_heads));
  ParallelFor(shape.kv_heads, s.threads, [&](int64_t h) {
    kv[static_cast<size_t>(h)] = MakeKvHead(context, seed, layer, static_cast<int>(h));
  });
  std::vector<QueryHeadSetup> queries;
  for (int h = 0; h < shape.q_heads; ++h) queries.push_back(MakeQueryHead(seed, layer, h));

  const int64_t total = s.meta.total_len;
  // Every element is overwritten below, so buffers of the right shape are reused as they are.
  auto ensure_shape = [&](HeadTensor& t, int heads) {
    if (t.heads() != heads || t.positions() != total || t.dim() != shape.head_dim) {
      t = HeadTensor(heads, total, shape.head_dim);
    }
  };
  ensure_shape(out.queries, shape.q_heads);
  ensure_shape(out.keys, shape.kv_heads);
  ensure_shape(out.values, shape.kv_heads);
  out.queries_pre_rope = HeadTensor();
  out.keys_pre_rope = HeadTensor();
  // Items: (head, block of positions) over queries, then keys, then values.
  const int64_t blocks = (total + kBlockPositions - 1) / kBlockPositions;
  const int64_t heads = shape.q_heads + 2 * static_cast<int64_t>(shape.kv_heads);
  const int group = shape.GroupSize();
  ParallelFor(heads * blocks, s.threads, [&](int64_t item) {
    const auto head = static_cast<int>(item / blocks);
    const int64_t begin = (item % blocks) * kBlockPositions;
    const int64_t end = std::min(total, begin + kBlockPositions);
    if (head < shape.q_heads) {
      FillQueries(context, kv[static_cast<size_t>(head / group)],
                  queries[static_cast<size_t>(head)], begin, end, out.queries.Row(head, begin));
    } else if (head < shape.q_heads + shape.kv_heads) {
      const int h = head - shape.q_heads;
      FillKeys(context, kv[static_cast<size_t>(h)], begin, end, out.keys.Row(h, begin));
    } else {
      const int h = head - shape.q_heads - shape.kv_heads;
      FillValues(context, kv[static_cast<size_t>(h)], begin, end, out.values.Row(h, begin));
    }
  });
}

SynthTrace GenerateSynthetic(const models::ModelShape& shape,
                             const SynthParams& params,
                             int threads) {
  const SynthGenerator generator(shape, params, threads);
  std::vector<LayerTensors> layers;
  layers.reserve(static_cast<size_t>(shape.layers));
  for (int l = 0; l < shape.layers; ++l) layers.push_back(generator.Layer(l));
  return {Trace(generator.meta(), std::move(layers)), generator.layout()};
}

}  // namespace kvsim::traces::synthetic
