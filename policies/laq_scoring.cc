#include "policies/laq_scoring.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

SnapKvOptions DecodeOptions(const LaqOptions& options) {
  SnapKvOptions decode;
  decode.window = std::max<int64_t>(1, options.window + options.lookahead);
  decode.kernel = options.kernel;
  decode.max_pool = options.max_pool;
  return decode;
}

}  // namespace

LaqOptions ReadLaqOptions(const PolicyParams& params, int64_t default_window) {
  LaqOptions options;
  options.lookahead = params.GetInt("lookahead", 8, 0, 1 << 20);
  options.window = params.GetInt("window", default_window, 0, 1 << 20);
  options.kernel = params.GetInt("kernel", 7, 1, 1001);
  if (options.kernel % 2 == 0) {
    ThrowInputError(
        "policy '{}': parameter kernel={} is not valid: expected an odd integer (the "
        "pool is centred on each position)",
        params.policy_name(), options.kernel);
  }
  static constexpr std::string_view kPools[] = {"max", "avg"};
  options.max_pool = params.GetChoice("pooling", "max", kPools) == "max";
  return options;
}

RowMatrixXf ObservationAttention(ConstMatrixMap prompt_keys,
                                 ConstMatrixMap queries,
                                 std::span<const int64_t> query_positions) {
  KVSIM_ASSERT(static_cast<Eigen::Index>(query_positions.size()) == queries.rows(),
               "{} query positions for {} queries", query_positions.size(), queries.rows());
  const Eigen::Index n = prompt_keys.rows();
  const float scale = 1.0f / std::sqrt(static_cast<float>(prompt_keys.cols()));
  RowMatrixXf weights = (queries * prompt_keys.transpose()) * scale;
  for (Eigen::Index r = 0; r < weights.rows(); ++r) {
    const int64_t position = query_positions[static_cast<size_t>(r)];
    KVSIM_ASSERT(position >= 0, "negative query position {}", position);
    const Eigen::Index visible = std::min<Eigen::Index>(n, position + 1);
    auto row = weights.row(r).head(visible);
    row = (row.array() - row.maxCoeff()).exp();
    row /= row.sum();
    weights.row(r).tail(n - visible).setZero();
  }
  return weights;
}

void SelectStage2Victims(std::span<const RowMatrixXf> head_rows,
                         const LaqOptions& options,
                         int64_t budget,
                         int64_t count,
                         std::vector<int64_t>* victims) {
  KVSIM_ASSERT(!head_rows.empty(), "stage 2 needs at least one query head");
  const int64_t n = head_rows[0].cols();
  const int64_t window = std::min(options.window, budget);
  const int64_t prefix = n - window;
  std::vector<double> score(static_cast<size_t>(prefix), 0.0);
  const double inv = 1.0 / static_cast<double>(head_rows.size());
  for (const RowMatrixXf& rows : head_rows) {
    KVSIM_ASSERT(rows.cols() == n, "observation rows over {} keys, expected {}", rows.cols(), n);
    std::vector<double> v(static_cast<size_t>(prefix), 0.0);
    for (Eigen::Index r = 0; r < rows.rows(); ++r) {
      for (int64_t j = 0; j < prefix; ++j) v[static_cast<size_t>(j)] += rows(r, j);
    }
    const std::vector<double> pooled = Pool1d(v, options.kernel, options.max_pool);
    for (int64_t j = 0; j < prefix; ++j) {
      score[static_cast<size_t>(j)] += inv * pooled[static_cast<size_t>(j)];
    }
  }
  std::vector<Candidate> candidates;
  candidates.reserve(static_cast<size_t>(prefix));
  for (int64_t j = 0; j < prefix; ++j) candidates.push_back({score[static_cast<size_t>(j)], j});
  TakeLowest(candidates, count, victims);
}

LaqOracleScoring::LaqOracleScoring(const PolicySetup& setup, LaqOptions options)
    : setup_(setup), options_(options), decode_(setup, DecodeOptions(options)) {}

void LaqOracleScoring::SelectVictims(const EvictionRequest& request,
                                     std::span<sim::EvictionDecision> decisions) {
  if (!request.after_prefill) {
    decode_.SelectVictims(request, decisions);
    return;
  }
  KVSIM_ASSERT(future_ != nullptr, "LAQ oracle used without a FutureView");
  const int64_t n = setup_.prompt_len;
  const int64_t lookahead = std::min(options_.lookahead, setup_.total_len - n);
  for (const StreamView& stream : request.streams) {
    const auto s = static_cast<size_t>(stream.stream);
    const int64_t count = request.min_victims[s];
    if (count == 0) continue;
    KVSIM_ASSERT(stream.cache->size() == n, "LAQ expects the whole prompt resident");
    const int64_t window = std::min(options_.window, request.budget_tokens[s]);
    std::vector<RowMatrixXf> head_rows;
    for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
      RowMatrixXf rows(window + lookahead, n);
      if (window > 0) rows.topRows(window) = request.prefill->WindowAttention(h, window);
      for (int64_t i = 0; i < lookahead; ++i) {
        const std::span<const float> full = future_->FullAttention(h, n + i);
        auto row = rows.row(window + i);
        row = Eigen::Map<const Eigen::RowVectorXf>(full.data(), n);
        const float prompt_mass = row.sum();
        if (prompt_mass > 0.0f) row /= prompt_mass;
      }
      head_rows.push_back(std::move(rows));
    }
    SelectStage2Victims(head_rows, options_, request.budget_tokens[s], count,
                        &decisions[s].victims);
  }
}

}  // namespace kvsim::policies
