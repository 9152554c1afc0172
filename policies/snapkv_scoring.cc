#include "policies/snapkv_scoring.h"

#include <algorithm>
#include <limits>

#include "common/error.h"
#include "policies/selection.h"

namespace kvsim::policies {

SnapKvOptions ReadSnapKvOptions(const PolicyParams& params,
                                int64_t default_window,
                                int64_t default_kernel,
                                bool default_max_pool) {
  SnapKvOptions options;
  options.window = params.GetInt("window", default_window, 1, 1 << 20);
  options.kernel = params.GetInt("kernel", default_kernel, 1, 1001);
  if (options.kernel % 2 == 0) {
    ThrowInputError(
        "policy '{}': parameter kernel={} is not valid: expected an odd integer (the "
        "pool is centred on each position)",
        params.policy_name(), options.kernel);
  }
  static constexpr std::string_view kPools[] = {"max", "avg"};
  options.max_pool = params.GetChoice("pooling", default_max_pool ? "max" : "avg", kPools) == "max";
  static constexpr std::string_view kOrders[] = {"pool-then-mean", "mean-then-pool"};
  options.mean_then_pool =
      params.GetChoice("pool_order", "pool-then-mean", kOrders) == "mean-then-pool";
  return options;
}

std::vector<double> Pool1d(std::span<const double> v, int64_t kernel, bool max_pool) {
  const auto m = static_cast<int64_t>(v.size());
  const int64_t half = kernel / 2;
  std::vector<double> out(v.size());
  for (int64_t j = 0; j < m; ++j) {
    const int64_t lo = std::max<int64_t>(0, j - half);
    const int64_t hi = std::min<int64_t>(m - 1, j + half);
    double acc = max_pool ? -std::numeric_limits<double>::infinity() : 0.0;
    for (int64_t i = lo; i <= hi; ++i) {
      acc = max_pool ? std::max(acc, v[static_cast<size_t>(i)]) : acc + v[static_cast<size_t>(i)];
    }
    out[static_cast<size_t>(j)] = max_pool ? acc : acc / static_cast<double>(kernel);
  }
  return out;
}

SnapKvScoring::SnapKvScoring(const PolicySetup& setup, SnapKvOptions options)
    : options_(options),
      track_decode_(setup.options.regime == sim::Regime::kBounded),
      prompt_len_(setup.prompt_len) {
  if (track_decode_) {
    window_sums_.assign(static_cast<size_t>(setup.num_streams()),
                        std::vector<float>(static_cast<size_t>(setup.total_len), 0.0f));
    ring_.assign(
        static_cast<size_t>(setup.num_streams()),
        std::vector<std::vector<std::pair<int64_t, float>>>(static_cast<size_t>(options.window)));
  }
}

void SnapKvScoring::OnStep(const StepView& step) {
  if (!track_decode_) return;
  const auto index = static_cast<size_t>((step.step - prompt_len_) % options_.window);
  for (const StreamView& stream : step.streams) {
    std::vector<float>& sums = window_sums_[static_cast<size_t>(stream.stream)];
    auto& leaving = ring_[static_cast<size_t>(stream.stream)][index];
    for (const auto& [pos, w] : leaving) sums[static_cast<size_t>(pos)] -= w;
    leaving.clear();
    const Eigen::VectorXf mean = GroupMeanAttention(stream);
    for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
      const int64_t pos = stream.cache->Position(slot);
      sums[static_cast<size_t>(pos)] += mean[slot];
      leaving.emplace_back(pos, mean[slot]);
    }
  }
}

void SnapKvScoring::SelectVictims(const EvictionRequest& request,
                                  std::span<sim::EvictionDecision> decisions) {
  for (const StreamView& stream : request.streams) {
    const auto s = static_cast<size_t>(stream.stream);
    const int64_t count = request.min_victims[s];
    if (count == 0) continue;
    if (request.after_prefill) {
      SelectAfterPrefill(request, stream, &decisions[s]);
      continue;
    }
    KVSIM_ASSERT(track_decode_, "snapkv asked to evict during decode in the prefill regime");
    const int64_t window = std::min(options_.window, request.budget_tokens[s]);
    const std::vector<int64_t> positions = stream.cache->SortedPositions();
    const int64_t candidates_end = static_cast<int64_t>(positions.size()) - window;
    std::vector<Candidate> candidates;
    candidates.reserve(static_cast<size_t>(candidates_end));
    for (int64_t i = 0; i < candidates_end; ++i) {
      const int64_t pos = positions[static_cast<size_t>(i)];
      candidates.push_back({window_sums_[s][static_cast<size_t>(pos)], pos});
    }
    TakeLowest(candidates, count, &decisions[s].victims);
  }
}

void SnapKvScoring::SelectAfterPrefill(const EvictionRequest& request,
                                       const StreamView& stream,
                                       sim::EvictionDecision* decision) {
  const int64_t n = stream.cache->size();
  // SnapKV scores the whole prompt once, with its last window; a block-wise prefill (EpiCache)
  // reaches this with only part of the prompt resident, which the method does not define.
  if (n != request.prefill->prompt_len()) {
    ThrowInputError(
        "policy uses SnapKV's one-shot prompt selection, which needs the whole prompt resident "
        "({} of {} prompt tokens are): use a full prefill (prefill block 0)",
        n, request.prefill->prompt_len());
  }
  const int64_t window =
      std::min(options_.window, request.budget_tokens[static_cast<size_t>(stream.stream)]);
  const int64_t prefix = n - window;
  std::vector<double> score(static_cast<size_t>(prefix), 0.0);
  const double inv = 1.0 / static_cast<double>(stream.num_q_heads);
  for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
    const RowMatrixXf attention = request.prefill->WindowAttention(h, window);
    std::vector<double> v(static_cast<size_t>(prefix), 0.0);
    for (int64_t r = 0; r < window; ++r) {
      for (int64_t j = 0; j < prefix; ++j) v[static_cast<size_t>(j)] += attention(r, j);
    }
    if (options_.mean_then_pool) {
      for (int64_t j = 0; j < prefix; ++j) score[static_cast<size_t>(j)] += inv * v[j];
      continue;
    }
    const std::vector<double> pooled = Pool1d(v, options_.kernel, options_.max_pool);
    for (int64_t j = 0; j < prefix; ++j) score[static_cast<size_t>(j)] += inv * pooled[j];
  }
  if (options_.mean_then_pool) score = Pool1d(score, options_.kernel, options_.max_pool);
  std::vector<Candidate> candidates;
  candidates.reserve(static_cast<size_t>(prefix));
  for (int64_t j = 0; j < prefix; ++j) candidates.push_back({score[static_cast<size_t>(j)], j});
  TakeLowest(candidates, request.min_victims[static_cast<size_t>(stream.stream)],
             &decision->victims);
}

int64_t SnapKvScoring::StateBytes() const {
  int64_t pairs = 0;
  for (const auto& stream : ring_) {
    for (const auto& step : stream) pairs += static_cast<int64_t>(step.size());
  }
  return pairs * static_cast<int64_t>(sizeof(float));
}

}  // namespace kvsim::policies
