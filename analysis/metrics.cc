#include "analysis/metrics.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/error.h"

namespace kvsim::analysis {

FullCacheAttention::FullCacheAttention(const traces::Trace& trace, int layer)
    : layer_(layer),
      prompt_len_(trace.meta().prompt_len),
      total_len_(trace.meta().total_len),
      num_q_heads_(trace.shape().q_heads),
      head_dim_(trace.shape().head_dim) {
  const int64_t steps = total_len_ - prompt_len_;
  const int g = trace.shape().GroupSize();
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  weights_.resize(static_cast<size_t>(num_q_heads_));
  outputs_.resize(static_cast<size_t>(num_q_heads_));
  top_.assign(static_cast<size_t>(num_q_heads_) * static_cast<size_t>(steps) * kMaxTopK, -1);
  total_mass_.assign(static_cast<size_t>(num_q_heads_) * static_cast<size_t>(steps), 0.0);
  const traces::LayerTensors& tensors = trace.layer(layer);
  tbb::parallel_for(0, num_q_heads_, [&](int h) {
    const ConstMatrixMap queries = tensors.queries.Head(h);
    const ConstMatrixMap keys = tensors.keys.Head(h / g);
    const ConstMatrixMap values = tensors.values.Head(h / g);
    RowMatrixXf& w = weights_[static_cast<size_t>(h)];
    w.noalias() = (queries.bottomRows(steps) * keys.transpose()) * scale;
    std::vector<int64_t> order;
    for (int64_t r = 0; r < steps; ++r) {
      const int64_t visible = prompt_len_ + r + 1;
      auto row = w.row(r);
      auto head = row.head(visible);
      const float max = head.maxCoeff();
      head = (head.array() - max).exp();
      head /= head.sum();
      row.tail(total_len_ - visible).setZero();
      double total = 0.0;
      for (int64_t j = 0; j < visible; ++j) total += static_cast<double>(row[j]);
      total_mass_[Index(h, prompt_len_ + r) / kMaxTopK] = total;
      order.resize(static_cast<size_t>(visible));
      std::iota(order.begin(), order.end(), int64_t{0});
      const int64_t k = std::min<int64_t>(kMaxTopK, visible);
      const auto by_weight = [&](int64_t a, int64_t b) {
        return row[a] != row[b] ? row[a] > row[b] : a < b;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), by_weight);
      std::copy(order.begin(), order.begin() + k,
                top_.begin() + static_cast<std::ptrdiff_t>(Index(h, prompt_len_ + r)));
    }
    outputs_[static_cast<size_t>(h)].noalias() = w * values;
  });
}

size_t FullCacheAttention::Index(int q_head, int64_t step) const {
  KVSIM_ASSERT(q_head >= 0 && q_head < num_q_heads_ && step >= prompt_len_ && step < total_len_,
               "no full attention for head {} step {}", q_head, step);
  const auto steps = static_cast<size_t>(total_len_ - prompt_len_);
  return (static_cast<size_t>(q_head) * steps + static_cast<size_t>(step - prompt_len_)) * kMaxTopK;
}

std::span<const float> FullCacheAttention::FullAttention(int q_head, int64_t step) const {
  Index(q_head, step);
  const RowMatrixXf& w = weights_[static_cast<size_t>(q_head)];
  return {w.data() + (step - prompt_len_) * total_len_, static_cast<size_t>(step + 1)};
}

double FullCacheAttention::TotalMass(int q_head, int64_t step) const {
  return total_mass_[Index(q_head, step) / kMaxTopK];
}

Eigen::Map<const Eigen::RowVectorXf> FullCacheAttention::Output(int q_head, int64_t step) const {
  Index(q_head, step);
  const RowMatrixXf& o = outputs_[static_cast<size_t>(q_head)];
  return Eigen::Map<const Eigen::RowVectorXf>(o.data() + (step - prompt_len_) * head_dim_,
                                              head_dim_);
}

std::span<const int64_t> FullCacheAttention::TopPositions(int q_head, int64_t step) const {
  const size_t index = Index(q_head, step);
  const auto k = static_cast<size_t>(std::min<int64_t>(kMaxTopK, step + 1));
  return {top_.data() + index, k};
}

void MetricSamples::Append(const MetricSamples& other) {
  const auto append = [](std::vector<float>& to, const std::vector<float>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  append(mass_recall, other.mass_recall);
  append(rel_l2_error, other.rel_l2_error);
  append(cosine, other.cosine);
  for (size_t i = 0; i < top_recall_sum.size(); ++i) top_recall_sum[i] += other.top_recall_sum[i];
  top_recall_count += other.top_recall_count;
}

double MetricSamples::TopRecallMean(size_t k) const {
  if (top_recall_count == 0) return std::numeric_limits<double>::quiet_NaN();
  return top_recall_sum[k] / static_cast<double>(top_recall_count);
}

double Percentile(std::span<const float> values, double q) {
  KVSIM_ASSERT(!values.empty(), "percentile of no values");
  std::vector<float> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  const double h = static_cast<double>(sorted.size() - 1) * q;
  const auto lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = h - static_cast<double>(lo);
  return static_cast<double>(sorted[lo]) +
         frac * (static_cast<double>(sorted[hi]) - static_cast<double>(sorted[lo]));
}

double Mean(std::span<const float> values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0.0;
  for (const float v : values) sum += static_cast<double>(v);
  return sum / static_cast<double>(values.size());
}

Summary Summarize(std::span<const float> values) {
  if (values.empty()) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return Summary{nan, nan, nan, nan};
  }
  return Summary{Mean(values), Percentile(values, 0.05), Percentile(values, 0.50),
                 Percentile(values, 0.95)};
}

namespace {

// Full-cache weight summed over the resident positions, in double; four partial sums so the adds
// do not wait on each other (the order moves the sum by ~1e-16).
double ResidentMass(std::span<const float> full, std::span<const sim::CacheEntry> entries) {
  double partial[4] = {};
  size_t i = 0;
  for (; i + 4 <= entries.size(); i += 4) {
    for (size_t lane = 0; lane < 4; ++lane) {
      partial[lane] += static_cast<double>(full[static_cast<size_t>(entries[i + lane].position)]);
    }
  }
  for (; i < entries.size(); ++i) {
    partial[0] += static_cast<double>(full[static_cast<size_t>(entries[i].position)]);
  }
  return (partial[0] + partial[1]) + (partial[2] + partial[3]);
}

}  // namespace

void LayerMetrics::OnMeasure(const sim::MeasureView& view) {
  for (const policies::StreamView& stream : view.streams) {
    const sim::KvCache& cache = *stream.cache;
    // Every position [0, step] resident, as it was written: the full cache itself.
    const bool whole_cache = cache.size() == view.step + 1 &&
                             (cache.IsSourcePrefix() ||
                              std::all_of(cache.entries().begin(), cache.entries().end(),
                                          [](const sim::CacheEntry& e) { return e.pristine(); }));
    for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
      samples_.mass_recall.push_back(
          whole_cache ? 1.0f
                      : static_cast<float>(
                            ResidentMass(full_.FullAttention(h, view.step), cache.entries()) /
                            full_.TotalMass(h, view.step)));

      if (whole_cache) {
        samples_.rel_l2_error.push_back(0.0f);
        samples_.cosine.push_back(1.0f);
      } else {
        const Eigen::RowVectorXd resident = view.outputs->row(h).cast<double>();
        const Eigen::RowVectorXd reference = full_.Output(h, view.step).cast<double>();
        const double ref_sq = reference.squaredNorm();
        const double res_sq = resident.squaredNorm();
        const double diff = (resident - reference).norm();
        // A zero reference has no direction: error = |resident|, cosine 1 iff both are 0.
        samples_.rel_l2_error.push_back(
            static_cast<float>(ref_sq > 0.0 ? diff / std::sqrt(ref_sq) : std::sqrt(res_sq)));
        const double denom = std::sqrt(ref_sq * res_sq);
        samples_.cosine.push_back(static_cast<float>(denom > 0.0 ? resident.dot(reference) / denom
                                                                 : (ref_sq == res_sq ? 1.0 : 0.0)));
      }

      const std::span<const int64_t> top = full_.TopPositions(h, view.step);
      for (size_t i = 0; i < kTopK.size(); ++i) {
        const size_t k = std::min(top.size(), static_cast<size_t>(kTopK[i]));
        int64_t hits = 0;
        for (size_t r = 0; r < k; ++r) hits += cache.Contains(top[r]) ? 1 : 0;
        samples_.top_recall_sum[i] +=
            static_cast<double>(static_cast<float>(hits) / static_cast<float>(k));
      }
      ++samples_.top_recall_count;
    }
  }
}

}  // namespace kvsim::analysis
