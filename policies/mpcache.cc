// `mpcache`: MPCache (card 4). Look-once static eviction: right after prefill every stream of the
// layer keeps the same top-B prompt tokens by the static score (card 4 (h): the per-dataset
// threshold tau is converted into a budget; `tau` > 0 additionally drops tokens scoring below it,
// as the code's threshold). Generated tokens are never selected while a prompt token is resident
// (card 4 (d)); in Regime::kBounded a decode step that must evict takes the lowest-scoring resident
// prompt token, and only when none is left the oldest generated token (our choice: the card has no
// decode-time eviction).
//
// Dynamic stage (`dynamic`, default on): at every decode step MpCacheSelect picks, per stream,
// the hierarchical-cluster subset of the resident prompt tokens that the query attends to
// (AttendMask; generated tokens always attended). It is sparse attention over the resident set:
// it changes the output and the compute, not the memory (card 4 (h)).
#include "policies/mpcache.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {

Eigen::VectorXd MpCacheStaticScores(const QueryHistory& queries,
                                    const sim::PrefillAttention& prefill,
                                    const models::ModelShape& shape) {
  const int64_t n = prefill.prompt_len();
  // LARGE_TOKEN_NUM = 24000 in the code: longer prompts use a 10 % tail.
  const double tail_fraction = n > 24000 ? 0.1 : 0.2;
  const int64_t tail =
      std::max<int64_t>(1, static_cast<int64_t>(tail_fraction * static_cast<double>(n)));
  // The tail's rows in blocks: the whole tail x n probability matrix (and a logits matrix beside
  // it) would be 0.86 GB at a 32k prompt (issue 11). Each row's arithmetic is unchanged and the
  // column max is exact, so the scores do not depend on the block size. 256 rows: a multiple of
  // 16, so every row starts at the same alignment as in one tail x n matrix.
  constexpr int64_t kRowBlock = 256;
  Eigen::VectorXf best = Eigen::VectorXf::Constant(n, -std::numeric_limits<float>::infinity());
  RowMatrixXf pbar;
  RowMatrixXf logits;
  for (int64_t first = n - tail; first < n; first += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n - first);
    pbar.setZero(rows, n);
    for (int h = 0; h < shape.q_heads; ++h) {
      logits.noalias() = queries.Rows(h, first, first + rows) *
                         prefill.PromptKeys(h / shape.GroupSize()).transpose();
      for (int64_t i = 0; i < rows; ++i) {
        auto row = logits.row(i);
        row = (row.array() - row.maxCoeff()).exp();
        row /= row.sum();
      }
      pbar += logits;
    }
    pbar /= static_cast<float>(shape.q_heads);
    best = best.cwiseMax(pbar.colwise().maxCoeff().transpose());
  }
  return best.cast<double>();
}

namespace {

// sim of the rows [begin, end) of keys, per card 4 (b).
double ClusterSim(const Eigen::Ref<const RowMatrixXf>& keys,
                  const Eigen::VectorXf& query,
                  int64_t begin,
                  int64_t end,
                  double alpha) {
  const auto block = keys.middleRows(begin, end - begin);
  const Eigen::RowVectorXf hi = block.colwise().maxCoeff();
  const Eigen::RowVectorXf lo = block.colwise().minCoeff();
  const auto a = static_cast<float>(alpha);
  return static_cast<double>((a * hi + (1.0f - a) * lo).dot(query.transpose()));
}

// Indices of the `count` largest sims among `eligible` clusters (ties: the earlier cluster).
std::vector<int64_t> TopClusters(const std::vector<double>& sims,
                                 const std::vector<bool>& eligible,
                                 int64_t count) {
  std::vector<int64_t> order;
  for (size_t c = 0; c < sims.size(); ++c) {
    if (eligible[c]) order.push_back(static_cast<int64_t>(c));
  }
  count = std::min<int64_t>(count, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int64_t a, int64_t b) {
    const double sa = sims[static_cast<size_t>(a)], sb = sims[static_cast<size_t>(b)];
    return sa != sb ? sa > sb : a < b;
  });
  order.resize(static_cast<size_t>(count));
  return order;
}

}  // namespace

std::vector<int64_t> MpCacheSelect(const Eigen::Ref<const RowMatrixXf>& keys,
                                   const Eigen::VectorXf& query,
                                   const MpCacheSelectParams& params) {
  const int64_t n = keys.rows();
  if (n == 0) return {};
  const int64_t s1 = params.cluster1, s2 = params.cluster2;
  const int64_t coarse = (n + s1 - 1) / s1;
  std::vector<double> sims1(static_cast<size_t>(coarse));
  for (int64_t c = 0; c < coarse; ++c) {
    sims1[static_cast<size_t>(c)] =
        ClusterSim(keys, query, c * s1, std::min(n, (c + 1) * s1), params.alpha);
  }
  std::vector<bool> keep1(static_cast<size_t>(coarse), false);
  const auto k1 = static_cast<int64_t>(params.ratio1 * static_cast<double>(coarse));
  for (const int64_t c : TopClusters(sims1, std::vector<bool>(sims1.size(), true), k1)) {
    keep1[static_cast<size_t>(c)] = true;
  }
  keep1.front() = keep1.back() = true;  // sink and last (partial) cluster

  const int64_t fine = (n + s2 - 1) / s2;
  std::vector<double> sims2(static_cast<size_t>(fine));
  std::vector<bool> eligible(static_cast<size_t>(fine), false);
  for (int64_t c = 0; c < fine; ++c) {
    if (!keep1[static_cast<size_t>(c * s2 / s1)]) continue;
    eligible[static_cast<size_t>(c)] = true;
    sims2[static_cast<size_t>(c)] =
        ClusterSim(keys, query, c * s2, std::min(n, (c + 1) * s2), params.alpha);
  }
  std::vector<bool> keep2(static_cast<size_t>(fine), false);
  const auto k2 = static_cast<int64_t>(params.ratio2 * static_cast<double>(fine));
  for (const int64_t c : TopClusters(sims2, eligible, k2)) keep2[static_cast<size_t>(c)] = true;
  keep2.front() = keep2.back() = true;
  std::vector<int64_t> selected;
  for (int64_t j = 0; j < n; ++j) {
    if (keep2[static_cast<size_t>(j / s2)]) selected.push_back(j);
  }
  return selected;
}

namespace {

class MpCachePolicy final : public EvictionPolicy {
 public:
  MpCachePolicy(const PolicySetup& setup, double tau, bool dynamic, MpCacheSelectParams select)
      : setup_(setup), tau_(tau), dynamic_(dynamic), select_(select) {}

  std::string_view Name() const override { return "mpcache"; }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    if (request.after_prefill) {
      // The same for every budget of a sweep: computed once per layer (O(tail x n x d x Hq)).
      scores_ = request.prefill->SharedStatistic("mpcache static scores", [&] {
        return MpCacheStaticScores(request.queries, *request.prefill, setup_.shape);
      });
    }
    const int64_t n = setup_.prompt_len;
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(stream.cache->size()));
      for (const sim::CacheEntry& e : stream.cache->entries()) {
        // Generated tokens rank above every prompt token, older ones first to go among them.
        const double score =
            e.position < n ? scores_[e.position] : 2.0 - 1.0 / static_cast<double>(e.position + 1);
        if (request.after_prefill && score < tau_) {
          decisions[s].victims.push_back(e.position);
        } else {
          candidates.push_back({score, e.position});
        }
      }
      const int64_t more =
          request.min_victims[s] - static_cast<int64_t>(decisions[s].victims.size());
      if (more > 0) TakeLowest(candidates, more, &decisions[s].victims);
    }
  }

  // Dynamic stage: query `step` attends to the generated tokens and to MpCacheSelect's choice among
  // the resident prompt tokens (position order), with the group's summed query.
  bool AttendMask(const StreamView& stream,
                  int64_t step,
                  const QueryHistory& queries,
                  std::vector<uint8_t>& attend) override {
    if (!dynamic_) return false;
    const sim::KvCache& cache = *stream.cache;
    std::vector<int64_t> prompt_slots;
    for (const int64_t p : cache.SortedPositions()) {
      if (p < setup_.prompt_len) prompt_slots.push_back(cache.SlotOf(p));
    }
    RowMatrixXf keys(static_cast<int64_t>(prompt_slots.size()), cache.head_dim());
    for (size_t i = 0; i < prompt_slots.size(); ++i) {
      keys.row(static_cast<int64_t>(i)) = cache.KeyRow(prompt_slots[i]);
    }
    Eigen::VectorXf query = Eigen::VectorXf::Zero(cache.head_dim());
    for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
      query += queries.Row(h, step).transpose();
    }
    for (const int64_t slot : prompt_slots) attend[static_cast<size_t>(slot)] = 0;
    for (const int64_t i : MpCacheSelect(keys, query, select_)) {
      attend[static_cast<size_t>(prompt_slots[static_cast<size_t>(i)])] = 1;
    }
    return true;
  }

  // The static score vector of the prompt (one float per token per layer, as the code's mask).
  int64_t StateBytes() const override {
    return static_cast<int64_t>(scores_.size()) * static_cast<int64_t>(sizeof(float));
  }

 private:
  PolicySetup setup_;
  double tau_;
  bool dynamic_;
  MpCacheSelectParams select_;
  Eigen::VectorXd scores_;  // static score per prompt position
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeMpCache(const PolicyParams& params, const PolicySetup& setup) {
  // tau = 0: budget only (card 4 (h)); the code's per-dataset thresholds are 1e-20 .. 1e-3.
  const double tau = params.GetDouble("tau", 0.0, 0.0, 1.0);
  // dynamic = false: the static stage alone (the survivors are attended densely).
  const bool dynamic = params.GetBool("dynamic", true);
  MpCacheSelectParams select;
  select.alpha = params.GetDouble("alpha", select.alpha, 0.0, 1.0);
  select.cluster1 = static_cast<int>(params.GetInt("cluster1", select.cluster1, 1, 1 << 20));
  select.cluster2 = static_cast<int>(params.GetInt("cluster2", select.cluster2, 1, 1 << 20));
  select.ratio1 = params.GetDouble("ratio1", select.ratio1, 0.0, 1.0);
  select.ratio2 = params.GetDouble("ratio2", select.ratio2, 0.0, 1.0);
  params.Validate();
  if (select.cluster1 % select.cluster2 != 0) {
    ThrowInputError(
        "policy 'mpcache': cluster1={} is not a multiple of "
        "cluster2={} (card 4)",
        select.cluster1, select.cluster2);
  }
  if (setup.options.prefill_block != 0) {
    ThrowInputError(
        "policy 'mpcache': its look-once eviction needs the whole "
        "prompt (prefill block {} given, "
        "expected 0)",
        setup.options.prefill_block);
  }
  return std::make_unique<MpCachePolicy>(setup, tau, dynamic, select);
}

}  // namespace kvsim::policies
