#include "traces/synthetic/heads.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "traces/synthetic/random.h"

namespace kvsim::traces::synthetic {
namespace {

// Key coefficients (logit units) of each structure; the query coefficient is gain / these.
// Recency keys are small so that segment mean keys are dominated by their topic; topic keys
// are large for the same reason (EpiCache clusters segments by mean key).
constexpr float kRecencyKey = 0.3f;
constexpr float kTopicKey = 3.0f;
// Recency planes (random Fourier features) when the head dimension allows; fewer give a
// noisier kernel, never fewer than kMinFrequencies.
constexpr int kMaxFrequencies = 16;
constexpr int kMinFrequencies = 4;

// Stream purposes, mixed into StreamKey so no two streams of a (layer, head) coincide.
enum Purpose : uint64_t { kKvSetup = 1, kQuerySetup, kKeyNoise, kValueNoise, kQueryNoise };

// Rows [begin, end) x 2F of recency features: cos and sin of omega_f * t, times `scale`,
// written into columns [column, column + 2F) of the row-major `coef` (`stride` columns).
// Computed in double by rotating from the exact angle at `begin`; the drift over a block of
// a few hundred steps is ~1e-13, far below float precision, and every row's value depends
// only on `begin`, which fill blocks fix independently of the thread count.
void FillRecency(const std::vector<double>& omega,
                 double scale,
                 int64_t begin,
                 int64_t end,
                 float* coef,
                 int stride,
                 int column) {
  for (size_t f = 0; f < omega.size(); ++f) {
    double c = std::cos(omega[f] * static_cast<double>(begin));
    double s = std::sin(omega[f] * static_cast<double>(begin));
    const double step_c = std::cos(omega[f]);
    const double step_s = std::sin(omega[f]);
    float* row = coef + column + 2 * static_cast<int>(f);
    for (int64_t t = begin; t < end; ++t, row += stride) {
      row[0] = static_cast<float>(scale * c);
      row[1] = static_cast<float>(scale * s);
      const double next_c = c * step_c - s * step_s;
      s = s * step_c + c * step_s;
      c = next_c;
    }
  }
}

// out (rows x d) = coef (rows x count) * projection + noise (rows x base) * base_projection.
void Project(const KvHeadSetup& kv, const RowMatrixXf& coef, const RowMatrixXf& noise, float* out) {
  MatrixMap result(out, coef.rows(), kv.projection.cols());
  result.noalias() = coef * kv.projection;
  result.noalias() += noise * kv.base_projection;
}

}  // namespace

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

HeadFactors HeadFactors::Draw(Rng& rng, double lo, double hi) {
  HeadFactors f;
  for (double* x : {&f.sink, &f.heavy, &f.recency, &f.recurring, &f.needle, &f.shifted, &f.topic}) {
    *x = rng.Uniform(lo, hi);
  }
  return f;
}

KvHeadSetup MakeKvHead(const Context& c, uint64_t seed, int layer, int kv_head) {
  const SynthParams& p = c.params;
  const Directions& dirs = c.dirs;
  const int d = c.head_dim;
  const auto l = static_cast<uint64_t>(layer);
  const auto h = static_cast<uint64_t>(kv_head);
  Rng rng(StreamKey(seed, {l, h, kKvSetup}));
  KvHeadSetup kv;

  // Random rotation (Q of a Gaussian matrix's QR) and the directions in the rotated space.
  RowMatrixXf gaussian(d, d);
  rng.FillGaussian(gaussian.data(), static_cast<int64_t>(gaussian.size()));
  const Eigen::MatrixXf rotation_cm =
      Eigen::HouseholderQR<Eigen::MatrixXf>(gaussian).householderQ();
  const RowMatrixXf rotation_t = rotation_cm.transpose();
  RowMatrixXf directions = RowMatrixXf::Zero(dirs.count, d);
  if (dirs.orthogonal) {
    directions.leftCols(dirs.count).setIdentity();
  } else {
    rng.FillGaussian(directions.data(), static_cast<int64_t>(directions.size()));
    directions.rowwise().normalize();
  }
  const float scale = std::pow(static_cast<float>(d), 0.25f);
  kv.projection = directions * rotation_t * scale;
  kv.base_projection = rotation_t.bottomRows(d - dirs.base_begin) * scale;

  kv.factors = HeadFactors::Draw(rng, 0.85, 1.15);
  kv.omega.resize(static_cast<size_t>(dirs.frequencies));
  for (double& w : kv.omega) w = rng.Gaussian() / p.recent_window;

  auto add = [&](int64_t position, int column, double value) {
    kv.key_coefs.push_back({position, column, static_cast<float>(value)});
  };
  for (int64_t s : c.layout.sinks) add(s, dirs.sink, 1.0);
  for (int64_t s : c.layout.heavy_hitters) add(s, dirs.heavy, rng.Uniform(0.9, 1.1));
  for (int64_t s : c.layout.window_targets) add(s, dirs.window, rng.Uniform(0.9, 1.1));
  for (int64_t s : c.layout.decode_targets) add(s, dirs.decode, rng.Uniform(0.9, 1.1));
  for (size_t i = 0; i < c.layout.recurring.size(); ++i) {
    add(c.layout.recurring[i].position, dirs.recurring + static_cast<int>(i), 1.0);
  }
  for (size_t i = 0; i < c.layout.needles.size(); ++i) {
    add(c.layout.needles[i].position, dirs.needle + static_cast<int>(i), 1.0);
  }
  for (size_t i = 0; i < c.segments.size(); ++i) {
    const int topic = c.layout.segment_topics[i];
    if (topic < 0) continue;
    for (int64_t s = c.segments[i].begin; s < c.segments[i].end; ++s) {
      add(s, dirs.topic + topic, kTopicKey * rng.Uniform(0.9, 1.1));
    }
  }
  std::stable_sort(kv.key_coefs.begin(), kv.key_coefs.end(),
                   [](const KeyCoef& a, const KeyCoef& b) { return a.position < b.position; });
  kv.key_noise = StreamKey(seed, {l, h, kKeyNoise});
  kv.value_noise = StreamKey(seed, {l, h, kValueNoise});
  return kv;
}

QueryHeadSetup MakeQueryHead(uint64_t seed, int layer, int q_head) {
  const auto l = static_cast<uint64_t>(layer);
  const auto h = static_cast<uint64_t>(q_head);
  Rng rng(StreamKey(seed, {l, h, kQuerySetup}));
  return {HeadFactors::Draw(rng, 0.9, 1.1), StreamKey(seed, {l, h, kQueryNoise})};
}

void FillKeys(const Context& c, const KvHeadSetup& kv, int64_t begin, int64_t end, float* out) {
  const Directions& dirs = c.dirs;
  const int64_t rows = end - begin;
  RowMatrixXf coef = RowMatrixXf::Zero(rows, dirs.count);
  const auto first = std::lower_bound(kv.key_coefs.begin(), kv.key_coefs.end(), begin,
                                      [](const KeyCoef& k, int64_t t) { return k.position < t; });
  for (auto it = first; it != kv.key_coefs.end() && it->position < end; ++it) {
    coef(it->position - begin, it->column) = it->value;
  }
  if (dirs.frequencies > 0) {
    FillRecency(kv.omega, kRecencyKey, begin, end, coef.data(), dirs.count, dirs.recency);
  }
  const int base_dims = c.head_dim - dirs.base_begin;
  RowMatrixXf noise(rows, base_dims);
  FillGaussian(kv.key_noise, static_cast<uint64_t>(begin * base_dims),
               static_cast<size_t>(noise.size()), 1.0f, noise.data());
  Project(kv, coef, noise, out);
}

void FillValues(const Context& c, const KvHeadSetup& kv, int64_t begin, int64_t end, float* out) {
  const auto d = static_cast<uint64_t>(c.head_dim);
  FillGaussian(kv.value_noise, static_cast<uint64_t>(begin) * d,
               static_cast<size_t>(end - begin) * d, 1.0f, out);
}

void FillQueries(const Context& c,
                 const KvHeadSetup& kv,
                 const QueryHeadSetup& q,
                 int64_t begin,
                 int64_t end,
                 float* out) {
  // Coefficient gain * factors / key coefficient on each attended direction.
  const SynthParams& p = c.params;
  const Directions& dirs = c.dirs;
  const HeadFactors& head = kv.factors;
  const HeadFactors& query = q.factors;
  auto gain = [](double g, double f1, double f2) { return static_cast<float>(g * f1 * f2); };
  const int64_t rows = end - begin;
  RowMatrixXf coef = RowMatrixXf::Zero(rows, dirs.count);
  if (dirs.sink >= 0) coef.col(dirs.sink).setConstant(gain(p.sink_gain, head.sink, query.sink));
  if (dirs.heavy >= 0) {
    coef.col(dirs.heavy).setConstant(gain(p.heavy_gain, head.heavy, query.heavy));
  }
  const int64_t window_begin = p.prompt_len - p.observation_window;
  const int64_t question_begin = p.prompt_len - p.question_len;
  const int64_t period = static_cast<int64_t>(p.recurrence_on) + p.recurrence_gap;
  const float shifted_gain = gain(p.shifted_gain, head.shifted, query.shifted);
  const float recurring_gain = gain(p.recurrence_gain, head.recurring, query.recurring);
  const float needle_gain = gain(p.needle_gain, head.needle, query.needle);
  const float topic_gain = gain(p.topic_gain, head.topic, query.topic) / kTopicKey;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t - begin;
    if (dirs.window >= 0) {
      if (t >= window_begin && t < p.prompt_len) coef(row, dirs.window) = shifted_gain;
      if (t >= p.prompt_len) coef(row, dirs.decode) = shifted_gain;
    }
    for (size_t i = 0; i < c.layout.recurring.size(); ++i) {
      const RecurringToken& token = c.layout.recurring[i];
      if (t > token.position && (t + token.phase) % period < p.recurrence_on) {
        coef(row, dirs.recurring + static_cast<int>(i)) = recurring_gain;
      }
    }
    for (size_t i = 0; i < c.layout.needles.size(); ++i) {
      if (c.layout.needles[i].query_position == t) {
        coef(row, dirs.needle + static_cast<int>(i)) = needle_gain;
      }
    }
    if (c.layout.question_topic >= 0 && t >= question_begin) {
      coef(row, dirs.topic + c.layout.question_topic) = topic_gain;
    }
  }
  if (dirs.frequencies > 0) {
    const double g = gain(p.recent_gain, head.recency, query.recency) /
                     (kRecencyKey * static_cast<float>(dirs.frequencies));
    FillRecency(kv.omega, g, begin, end, coef.data(), dirs.count, dirs.recency);
  }
  const int base_dims = c.head_dim - dirs.base_begin;
  const float noise_scale = static_cast<float>(p.noise / std::sqrt(static_cast<double>(base_dims)));
  RowMatrixXf noise(rows, base_dims);
  FillGaussian(q.noise, static_cast<uint64_t>(begin * base_dims), static_cast<size_t>(noise.size()),
               noise_scale, noise.data());
  Project(kv, coef, noise, out);
}

}  // namespace kvsim::traces::synthetic
