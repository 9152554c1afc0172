// `d2o`: Dynamic Discriminative Operations (Wan et al., ICLR 2025, arXiv 2406.13035, card 9;
// official code AIoT-MLSys-Lab/d2o).
//
// Layer budgets (PrefillLayerStats + LayerBudget): attention density F_l = mean over the layer's
// query heads of the min-max normalised variance of the prompt column sums (low variance = dense
// layer); layers share softmax_l(-F_l), see D2oLayerBudgets. D2O's budget is a fraction of the
// prompt (hh_ratio + recent_ratio = 0.2 in its scripts); kvsim's token budget B maps to
// rho = B / (n + 1), so the compressed layers average at most B tokens per stream.
//
// Protected layers (code): layers 0, 1 and L-1 are never compressed (`skip_layers=true`, the
// default). Budget-fairness pitfall (card 9 (h)): LayerBudget reports them as kUnlimitedTokens,
// which the engine leaves out of its layer-sum check, so at budget B D2O holds B per stream only
// on average over the compressed layers, plus three whole layers; the memory ledger shows the
// difference. `skip_layers=false` compresses every layer for a like-for-like comparison.
//
// Token eviction: H2O accumulated attention (prompt column sums, then every decode row; group
// mean over a stream's query heads in GqaMode::kKvHead, per query head in kQueryHead as in the
// official repeat_kv code); the first `sinks` = 4 positions are forced to stay (+inf), the last
// R = floor(budget * recent_ratio) are protected, and the top H = budget - R of the rest survive.
// The card compresses the prompt at the first decode step (n + 1 -> H + R); the engine asks for
// the budget right after prefill, so kvsim compresses the n prompt tokens there (with merging) and
// evicts one token per decode step afterwards.
//
// Merging (card 9 (b)), through EvictionDecision::rewrites: every evicted key k_e finds its most
// cosine-similar survivor c* (ties: lowest position), u*_e = that similarity. A per-layer EMA
// threshold tau decides which evicted tokens are merged; the others are dropped.
//  - merge=paper (default; Eq. 9-12): tau_0 = mean u*, then tau = beta * max(u*) + (1 - beta) *
//    tau, decided per stream and token; k_c <- w_c k_c + sum_e w_e k_e with the normalised
//    weights of D2oMergeWeights (a convex combination), same weights for v.
//  - merge=code: tau_0 = mean u*, then tau = (1 - beta) * tau + beta * mean u*; the decision for
//    the e-th evicted token (position order) of every stream uses u* averaged over the layer's
//    streams although each stream evicted a different token (card 9 (h)); k_c <- (k_c + sum_e
//    u*_e k_e) / (1 + m), which shrinks norms.
// The survivor's accumulated score is left unchanged by a merge (the card is silent).
//
// Equal memory (issue 13): D2O's shares are fractions of the prompt (ratio <= 1 of n + 1), so no
// budget would keep the decode tokens and a budget curve could never reach the full cache. At
// B >= T (the trace's length) every layer is left uncompressed instead: D2O then equals `full`,
// as every other policy does at that budget (a kvsim choice; the paper never runs above ratio 1).
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <numbers>
#include <numeric>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/seed_policy_math.h"
#include "policies/selection.h"

namespace kvsim::policies {

std::vector<int64_t> D2oLayerBudgets(std::span<const double> density,
                                     const std::vector<bool>& is_protected,
                                     int64_t prompt_len,
                                     int64_t budget,
                                     double recent_share) {
  KVSIM_ASSERT(density.size() == is_protected.size(), "d2o: {} densities for {} layers",
               density.size(), is_protected.size());
  std::vector<int64_t> sizes(density.size(), kUnlimitedTokens);
  std::vector<size_t> compressed;
  for (size_t l = 0; l < density.size(); ++l) {
    if (!is_protected[l]) compressed.push_back(l);
  }
  if (compressed.empty()) return sizes;
  double max_neg = -std::numeric_limits<double>::infinity();
  for (size_t l : compressed) max_neg = std::max(max_neg, -density[l]);
  double norm = 0.0;
  for (size_t l : compressed) norm += std::exp(-density[l] - max_neg);
  const auto count = static_cast<double>(compressed.size());
  const auto n1 = static_cast<double>(prompt_len + 1);
  const double rho = static_cast<double>(budget) / n1;
  int64_t total = 0;
  for (size_t l : compressed) {
    const double softmax = std::exp(-density[l] - max_neg) / norm;
    const double ratio = std::clamp(softmax * count * rho, 0.01, 1.0);
    // At least one token per layer (budget >= 1 leaves room for it in the sum): a layer whose
    // share rounds to 0 would have nothing to attend when eviction runs before attention.
    sizes[l] =
        std::max<int64_t>(1, static_cast<int64_t>(std::floor(n1 * ratio * (1.0 - recent_share))) +
                                 static_cast<int64_t>(std::floor(n1 * ratio * recent_share)));
    total += sizes[l];
  }
  const int64_t limit = static_cast<int64_t>(compressed.size()) * budget;
  while (total > limit) {
    size_t largest = compressed.front();
    for (size_t l : compressed) {
      if (sizes[l] > sizes[largest]) largest = l;
    }
    --sizes[largest];
    --total;
  }
  return sizes;
}

std::vector<double> D2oMergeWeights(std::span<const double> u, D2oMerge mode) {
  std::vector<double> weights(u.size() + 1);
  if (mode == D2oMerge::kPaper) {
    double denominator = std::numbers::e;
    for (double x : u) denominator += std::exp(x);
    weights[0] = std::numbers::e / denominator;
    for (size_t e = 0; e < u.size(); ++e) weights[e + 1] = std::exp(u[e]) / denominator;
  } else {
    const double inv = 1.0 / static_cast<double>(u.size() + 1);
    weights[0] = inv;
    for (size_t e = 0; e < u.size(); ++e) weights[e + 1] = u[e] * inv;
  }
  return weights;
}

namespace {

struct D2oOptions {
  double recent_ratio = 0.5;
  int64_t sinks = 4;
  D2oMerge merge = D2oMerge::kPaper;
  double beta = 0.5;
  bool skip_layers = true;
};

// One evicted token's merge candidate.
struct MergeCandidate {
  int64_t victim = 0;
  int64_t target = -1;  // survivor position, -1 if none survives
  double similarity = 0.0;
};

class D2oPolicy final : public EvictionPolicy {
 public:
  D2oPolicy(const PolicySetup& setup, D2oOptions options)
      : options_(options),
        total_len_(setup.total_len),
        is_protected_(options.skip_layers &&
                      (setup.layer <= 1 || setup.layer == setup.num_layers() - 1)),
        scores_(static_cast<size_t>(setup.num_streams()),
                std::vector<float>(static_cast<size_t>(setup.total_len), 0.0f)) {}

  std::string_view Name() const override { return "d2o"; }

  // {F_l}: mean over query heads of (v_h - min) / (max - min + 1e-6), v_h the unbiased variance
  // of head h's prompt column sums (the code's misnamed `multimodal_entropy`).
  bool UsesPrefillLayerStats() const override { return true; }
  std::vector<double> PrefillLayerStats(const PrefillView& prefill) override {
    const sim::PrefillAttention& attention = *prefill.attention;
    const auto n = static_cast<double>(attention.prompt_len());
    std::vector<double> variance;
    for (int h = 0; h < attention.num_q_heads(); ++h) {
      const Eigen::VectorXd sums = attention.ColumnSums(h).cast<double>();
      variance.push_back(n > 1.0 ? (sums.array() - sums.mean()).square().sum() / (n - 1.0) : 0.0);
    }
    const auto [low, high] = std::minmax_element(variance.begin(), variance.end());
    const double lo = *low;
    const double range = *high - lo + 1e-6;
    double density = 0.0;
    for (double v : variance) density += (v - lo) / range;
    return {density / static_cast<double>(variance.size())};
  }

  int64_t LayerBudget(const BudgetPlanView& plan) override {
    if (plan.uniform_budget_tokens >= total_len_) return kUnlimitedTokens;  // the full cache
    std::vector<double> density;
    std::vector<bool> is_protected;
    for (int l = 0; l < plan.num_layers; ++l) {
      const std::vector<double>& stats = plan.layer_stats[static_cast<size_t>(l)];
      KVSIM_ASSERT(stats.size() == 1, "d2o expects one density per layer, got {}", stats.size());
      density.push_back(stats[0]);
      is_protected.push_back(options_.skip_layers && (l <= 1 || l == plan.num_layers - 1));
    }
    return D2oLayerBudgets(density, is_protected, plan.prompt_len, plan.uniform_budget_tokens,
                           options_.recent_ratio)[static_cast<size_t>(plan.layer)];
  }

  void OnPrefill(const PrefillView& prefill) override {
    resident_ = ResidentTokens(prefill.streams);
    if (is_protected_) return;
    for (const StreamView& stream : prefill.streams) {
      std::vector<float>& score = scores_[static_cast<size_t>(stream.stream)];
      const float inv = 1.0f / static_cast<float>(stream.num_q_heads);
      for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
        const Eigen::VectorXf& sums = prefill.attention->ColumnSums(h);
        for (int64_t j = prefill.begin; j < prefill.end; ++j) score[j] += inv * sums[j];
      }
    }
  }

  void OnStep(const StepView& step) override {
    resident_ = ResidentTokens(step.streams);
    if (is_protected_) return;
    for (const StreamView& stream : step.streams) {
      std::vector<float>& score = scores_[static_cast<size_t>(stream.stream)];
      const Eigen::VectorXf mean = GroupMeanAttention(stream);
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        score[stream.cache->Position(slot)] += mean[slot];
      }
    }
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    std::vector<std::vector<MergeCandidate>> merges(request.streams.size());
    bool any = false;
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      any = true;
      const int64_t budget = request.budget_tokens[s];
      const auto recent =
          static_cast<int64_t>(std::floor(static_cast<double>(budget) * options_.recent_ratio));
      const std::vector<int64_t> positions = stream.cache->SortedPositions();
      const int64_t candidates_end = static_cast<int64_t>(positions.size()) - recent;
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(candidates_end));
      for (int64_t i = 0; i < candidates_end; ++i) {
        const int64_t pos = positions[static_cast<size_t>(i)];
        // Sinks outrank every score; among themselves the oldest outranks (budgets below 4).
        const double score = pos < options_.sinks ? kSinkScore - static_cast<double>(pos)
                                                  : scores_[s][static_cast<size_t>(pos)];
        candidates.push_back({score, pos});
      }
      std::vector<int64_t>& victims = decisions[s].victims;
      TakeLowest(candidates, count, &victims);
      merges[s] = FindTargets(*stream.cache, positions, victims);
    }
    if (!any) return;
    DecideMerges(&merges);
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      decisions[s].rewrites = MergeRewrites(*stream.cache, merges[s]);
    }
  }

  void OnEvicted(int /*stream*/, std::span<const int64_t> positions) override {
    resident_ -= static_cast<int64_t>(positions.size());
  }

  // One float score per resident token plus the layer's threshold.
  int64_t StateBytes() const override {
    return resident_ * static_cast<int64_t>(sizeof(float)) + static_cast<int64_t>(sizeof(tau_));
  }

 private:
  static constexpr double kSinkScore = 1e30;

  static int64_t ResidentTokens(std::span<const StreamView> streams) {
    int64_t total = 0;
    for (const StreamView& stream : streams) total += stream.cache->size();
    return total;
  }

  // For each victim (in position order): its most cosine-similar survivor.
  static std::vector<MergeCandidate> FindTargets(const sim::KvCache& cache,
                                                 const std::vector<int64_t>& positions,
                                                 std::vector<int64_t> victims) {
    std::sort(victims.begin(), victims.end());
    std::vector<int64_t> survivors;
    std::set_difference(positions.begin(), positions.end(), victims.begin(), victims.end(),
                        std::back_inserter(survivors));
    Eigen::MatrixXd unit(static_cast<Eigen::Index>(survivors.size()), cache.head_dim());
    for (size_t i = 0; i < survivors.size(); ++i) {
      unit.row(static_cast<Eigen::Index>(i)) =
          cache.KeyRow(cache.SlotOf(survivors[i])).cast<double>();
      unit.row(static_cast<Eigen::Index>(i)).normalize();
    }
    Eigen::MatrixXd victim_unit(static_cast<Eigen::Index>(victims.size()), cache.head_dim());
    for (size_t e = 0; e < victims.size(); ++e) {
      victim_unit.row(static_cast<Eigen::Index>(e)) =
          cache.KeyRow(cache.SlotOf(victims[e])).cast<double>();
      victim_unit.row(static_cast<Eigen::Index>(e)).normalize();
    }
    // victims x survivors cosine similarities, one matrix product.
    const Eigen::MatrixXd similarity = victim_unit * unit.transpose();
    std::vector<MergeCandidate> out;
    out.reserve(victims.size());
    for (size_t e = 0; e < victims.size(); ++e) {
      MergeCandidate m{.victim = victims[e]};
      if (!survivors.empty()) {
        const auto row = similarity.row(static_cast<Eigen::Index>(e));
        Eigen::Index best = 0;
        for (Eigen::Index i = 1; i < row.size(); ++i) {
          if (row[i] > row[best]) best = i;
        }
        m.target = survivors[static_cast<size_t>(best)];
        m.similarity = row[best];
      }
      out.push_back(m);
    }
    return out;
  }

  // Updates tau and marks the candidates that are NOT merged with target = -1.
  void DecideMerges(std::vector<std::vector<MergeCandidate>>* merges) {
    std::vector<std::vector<MergeCandidate>>& m = *merges;
    // The similarity each decision compares with tau, per stream and victim.
    std::vector<std::vector<double>> decisive(m.size());
    std::vector<double> pooled;
    size_t width = 0;
    bool equal_counts = true;
    for (const auto& stream : m) {
      if (stream.empty()) continue;
      if (width != 0 && stream.size() != width) equal_counts = false;
      width = std::max(width, stream.size());
    }
    for (size_t s = 0; s < m.size(); ++s) {
      for (size_t e = 0; e < m[s].size(); ++e) {
        double u = m[s][e].similarity;
        if (options_.merge == D2oMerge::kCode && equal_counts) {
          double sum = 0.0;
          int streams = 0;
          for (const auto& other : m) {
            if (other.empty()) continue;
            sum += other[e].similarity;
            ++streams;
          }
          u = sum / static_cast<double>(streams);
        }
        decisive[s].push_back(u);
        if (m[s][e].target >= 0) pooled.push_back(m[s][e].similarity);
      }
    }
    if (pooled.empty()) return;
    const double mean =
        std::accumulate(pooled.begin(), pooled.end(), 0.0) / static_cast<double>(pooled.size());
    if (!has_tau_) {
      tau_ = mean;
      has_tau_ = true;
    } else if (options_.merge == D2oMerge::kPaper) {
      tau_ = options_.beta * *std::max_element(pooled.begin(), pooled.end()) +
             (1.0 - options_.beta) * tau_;
    } else {
      tau_ = (1.0 - options_.beta) * tau_ + options_.beta * mean;
    }
    for (size_t s = 0; s < m.size(); ++s) {
      for (size_t e = 0; e < m[s].size(); ++e) {
        if (decisive[s][e] < tau_) m[s][e].target = -1;
      }
    }
  }

  std::vector<sim::EntryRewrite> MergeRewrites(const sim::KvCache& cache,
                                               const std::vector<MergeCandidate>& merges) const {
    std::map<int64_t, std::vector<const MergeCandidate*>> by_target;
    for (const MergeCandidate& m : merges) {
      if (m.target >= 0) by_target[m.target].push_back(&m);
    }
    std::vector<sim::EntryRewrite> rewrites;
    for (const auto& [target, merged] : by_target) {
      std::vector<double> u;
      for (const MergeCandidate* m : merged) u.push_back(m->similarity);
      const std::vector<double> w = D2oMergeWeights(u, options_.merge);
      const int64_t slot = cache.SlotOf(target);
      Eigen::VectorXd key = w[0] * cache.KeyRow(slot).cast<double>().transpose();
      Eigen::VectorXd value = w[0] * cache.ValueRow(slot).cast<double>().transpose();
      for (size_t e = 0; e < merged.size(); ++e) {
        const int64_t victim_slot = cache.SlotOf(merged[e]->victim);
        key += w[e + 1] * cache.KeyRow(victim_slot).cast<double>().transpose();
        value += w[e + 1] * cache.ValueRow(victim_slot).cast<double>().transpose();
      }
      rewrites.push_back({.position = target,
                          .key = key.cast<float>(),
                          .value = value.cast<float>(),
                          .merged_tokens = static_cast<int32_t>(merged.size())});
    }
    return rewrites;
  }

  D2oOptions options_;
  int64_t total_len_;  // T: a budget of T or more keeps the full cache
  bool is_protected_;
  std::vector<std::vector<float>> scores_;  // [stream][position], accumulated attention
  double tau_ = 0.0;                        // EMA merge threshold of this layer
  bool has_tau_ = false;
  int64_t resident_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeD2o(const PolicyParams& params, const PolicySetup& setup) {
  // hh_ratio = recent_ratio = 0.1 in the README and run_pred_long_bench_sample.py: half of each
  // layer's budget is the recent window. beta 0.5: the code's alpha = belta = 0.5 EMA. 4 sinks.
  static constexpr std::string_view kMerges[] = {"paper", "code"};
  D2oOptions options;
  options.recent_ratio = params.GetDouble("recent_ratio", 0.5, 0.0, 1.0);
  options.sinks = params.GetInt("sinks", 4, 0, 1 << 20);
  options.merge =
      params.GetChoice("merge", "paper", kMerges) == "paper" ? D2oMerge::kPaper : D2oMerge::kCode;
  options.beta = params.GetDouble("beta", 0.5, 0.0, 1.0);
  options.skip_layers = params.GetBool("skip_layers", true);
  params.Validate();
  return std::make_unique<D2oPolicy>(setup, options);
}

}  // namespace kvsim::policies
