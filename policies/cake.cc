// `cake`: CAKE, cascading and adaptive KV-cache eviction with layer preferences (Qin et al.,
// ICLR 2025, arXiv 2503.12491, card 8; official code antgroup/cakekv).
//
// Layer preference (PrefillLayerStats + LayerBudget): over the window of the last w prompt queries
// and the prefix keys j < n - w, spatial dispersion H_l = -sum A log(A + 1e-10) and temporal shift
// V_l = sum_j Var_i A[i, j] (unbiased over the w rows), both summed over every query head of the
// layer; P_l = H_l^(1/tau1) * V_l^(1/tau2); the prefix budget T = (C - w) * layers is split in
// proportion to P_l and fixed by adjust_budgets (CakeLayerBudgets). The engine's uniform budget
// is CAKE's cache_size C (window included), so layer l holds B_l + w and the layers sum to
// layers * C exactly (when no layer is capped). H_l and V_l are unnormalised sums: only their
// ratios across layers matter, but the taus are tuned per model and budget (card 8 (h)).
//
// Cascading (card 8 (d)) re-trims layers 0..l after each layer's prefill; the final selection
// equals this one-shot allocation, so the replay simulates it one-shot. Cascading only bounds the
// peak memory DURING prefill, which a per-layer replay cannot see: CakePrefillPeakTokens
// (policies/seed_policy_math.h) computes the cascading and one-shot peaks from the same
// preferences. The engine's ledger records each layer's whole prompt as prefill_transient, i.e.
// the one-shot peak.
//
// Eviction indicator after prefill, per query head over the same window rows: I[j] = mean_i A[i,j]
// + gamma * Var_i A[i,j] for j < n - w, avg-pooled with kernel 5 (zero padding counted, card
// section 0), then the mean over the stream's query heads; keep the top B_l plus the w window
// tokens. Decode (Regime::kBounded), whenever a stream holds more than B_l + w: the same with the
// CURRENT single query (the variance term vanishes: TOVA-like, card 8 (h)), last w protected.
//
// Decode pooling order (`decode_order`, issue 13): cakekv gathers the kept prefix in torch.topk's
// order (descending score; `indices.sort()` is commented out in CakeDecodingKVCache_LayerWise and
// absent from evcit_layer_kvcache), so its cache slots are not in position order, and the
// decode indicator's avg-pool averages slot neighbours, not position neighbours.
//  - `position` (default): pool over the resident prefix in position order, what the paper
//    describes;
//  - `slot`: reproduce cakekv's slot order. Each stream tracks the reference cache's order: the
//    kept prefix by descending score (ties: lower position first, one of torch.topk's
//    unspecified orders), then the window and newer tokens in arrival order.
// The kept set's size and the protected window are the same in both; only which neighbours a
// score is pooled with differs. Prefill pools in position order in both (the prompt arrives in
// order).
//
// Prefill skip (card 8 (h)): CAKE leaves the prompt untouched when n <= C + w (C + w, not C). The
// policy then declares n - C slack tokens, keeps the whole prompt, and the first decode eviction
// trims to C. Other decisions where the card is silent: w = min(window, C) (with C <= window a
// layer keeps its last C tokens); the preference statistics use the configured window; all-zero
// preferences fall back to equal budgets.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/seed_policy_math.h"
#include "policies/selection.h"
#include "policies/snapkv_scoring.h"

namespace kvsim::policies {

std::vector<int64_t> CakeAdjustBudgets(std::vector<int64_t> budgets, int64_t cap, int64_t total) {
  const size_t layers = budgets.size();
  // Cap, spreading the excess equally over the layers below the cap (remainder to the first).
  while (true) {
    int64_t excess = 0;
    for (int64_t& b : budgets) {
      if (b > cap) {
        excess += b - cap;
        b = cap;
      }
    }
    std::vector<size_t> open;
    for (size_t l = 0; l < layers; ++l) {
      if (budgets[l] < cap) open.push_back(l);
    }
    if (excess == 0 || open.empty()) break;
    const auto count = static_cast<int64_t>(open.size());
    for (int64_t i = 0; i < count; ++i) {
      budgets[open[static_cast<size_t>(i)]] += excess / count + (i < excess % count ? 1 : 0);
    }
  }
  // Fix the total with equal increments (layers below the cap) or decrements (layers above 1).
  int64_t diff = total - std::accumulate(budgets.begin(), budgets.end(), int64_t{0});
  while (diff != 0) {
    const int64_t sign = diff > 0 ? 1 : -1;
    std::vector<size_t> open;
    for (size_t l = 0; l < layers; ++l) {
      if (sign > 0 ? budgets[l] < cap : budgets[l] > 1) open.push_back(l);
    }
    if (open.empty()) break;
    const auto count = static_cast<int64_t>(open.size());
    const int64_t magnitude = std::abs(diff);
    for (int64_t i = 0; i < count; ++i) {
      int64_t& b = budgets[open[static_cast<size_t>(i)]];
      const int64_t room = sign > 0 ? cap - b : b - 1;
      const int64_t step = std::min(room, magnitude / count + (i < magnitude % count ? 1 : 0));
      b += sign * step;
      diff -= sign * step;
    }
  }
  return budgets;
}

std::vector<int64_t> CakeLayerBudgets(std::span<const double> preference,
                                      int64_t cap,
                                      int64_t total) {
  double sum = 0.0;
  for (double p : preference) sum += p;
  const bool equal = !(sum > 0.0) || !std::isfinite(sum);
  const auto layers = static_cast<double>(preference.size());
  std::vector<int64_t> raw;
  raw.reserve(preference.size());
  for (double p : preference) {
    const double share = equal ? 1.0 / layers : p / sum;
    raw.push_back(static_cast<int64_t>(std::floor(share * static_cast<double>(total))));
  }
  return CakeAdjustBudgets(std::move(raw), cap, total);
}

CakePrefillPeak CakePrefillPeakTokens(std::span<const double> preference,
                                      int64_t prompt_len,
                                      int64_t window,
                                      int64_t total) {
  CakePrefillPeak peak;
  const auto layers = static_cast<int64_t>(preference.size());
  peak.one_shot = layers * prompt_len;
  for (int64_t l = 0; l < layers; ++l) {
    int64_t held = prompt_len;  // layer l, admitted whole
    if (l > 0) {
      const std::vector<int64_t> budgets =
          CakeLayerBudgets(preference.first(static_cast<size_t>(l)), prompt_len - window, total);
      for (int64_t b : budgets) held += std::min(prompt_len, b + window);
    }
    peak.cascading = std::max(peak.cascading, held);
  }
  return peak;
}

namespace {

constexpr int64_t kPoolKernel = 5;  // hard-coded in cakekv (card 8 (f))

struct CakeOptions {
  int64_t window = 32;
  double gamma = 200.0;
  double tau1 = 1.0;
  double tau2 = 1.0;
  bool slot_order = false;  // decode_order=slot (cakekv)
};

class CakePolicy final : public EvictionPolicy {
 public:
  CakePolicy(const PolicySetup& setup, CakeOptions options)
      : options_(options),
        num_streams_(setup.num_streams()),
        slot_order_(options.slot_order ? static_cast<size_t>(setup.num_streams()) : 0) {}

  std::string_view Name() const override { return "cake"; }

  // {H_l, V_l} of card 8 (b).
  bool UsesPrefillLayerStats() const override { return true; }
  std::vector<double> PrefillLayerStats(const PrefillView& prefill) override {
    const int64_t n = prefill.prompt_len;
    const int64_t w = std::min(options_.window, n);
    double entropy = 0.0;
    double variance = 0.0;
    for (int h = 0; h < prefill.attention->num_q_heads(); ++h) {
      const Eigen::MatrixXd a = prefill.attention->WindowAttention(h, w).cast<double>();
      for (int64_t j = 0; j < n - w; ++j) {
        const auto column = a.col(j).array();
        entropy -= (column * (column + 1e-10).log()).sum();
        if (w > 1) {
          variance += (column - column.mean()).square().sum() / static_cast<double>(w - 1);
        }
      }
    }
    return {entropy, variance};
  }

  int64_t LayerBudget(const BudgetPlanView& plan) override {
    const int64_t c = plan.uniform_budget_tokens;
    const int64_t n = plan.prompt_len;
    const int64_t w = std::min(options_.window, c);
    if (n <= c + w) {
      slack_ = std::max<int64_t>(0, n - c);
      return c;
    }
    slack_ = 0;
    std::vector<double> preference;
    for (const std::vector<double>& stats : plan.layer_stats) {
      KVSIM_ASSERT(stats.size() == 2, "cake expects {{H, V}} per layer, got {} values",
                   stats.size());
      // Clamped at 0: with near one-hot rows the + 1e-10 inside the log makes H a hair negative.
      preference.push_back(std::pow(std::max(0.0, stats[0]), 1.0 / options_.tau1) *
                           std::pow(std::max(0.0, stats[1]), 1.0 / options_.tau2));
    }
    const std::vector<int64_t> budgets =
        CakeLayerBudgets(preference, n - w, (c - w) * plan.num_layers);
    return budgets[static_cast<size_t>(plan.layer)] + w;
  }

  int64_t BudgetSlackTokens() const override { return slack_; }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t budget = request.budget_tokens[s];
      const int64_t size = stream.cache->size();
      // In the prefill-skip case only what the engine demands (nothing with the declared slack).
      const int64_t count = request.after_prefill && slack_ > 0
                                ? request.min_victims[s]
                                : std::max(request.min_victims[s], size - budget);
      if (count <= 0) continue;
      const int64_t w = std::min(options_.window, budget);
      const std::vector<int64_t> positions = options_.slot_order
                                                 ? SlotOrder(s, stream.cache->SortedPositions())
                                                 : stream.cache->SortedPositions();
      const int64_t prefix = size - w;
      const std::vector<double> score = request.after_prefill
                                            ? PrefillIndicator(request, stream, w)
                                            : DecodeIndicator(stream, positions, prefix);
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(prefix));
      for (int64_t j = 0; j < prefix; ++j) {
        candidates.push_back({score[static_cast<size_t>(j)], positions[static_cast<size_t>(j)]});
      }
      const size_t first_victim = decisions[s].victims.size();
      TakeLowest(candidates, count, &decisions[s].victims);
      kept_prefix_ = prefix - count;
      if (options_.slot_order) {
        RecordSlotOrder(s, std::move(candidates),
                        std::span(decisions[s].victims).subspan(first_victim), positions, prefix);
      }
    }
  }

  // The layer preferences and, per stream, the indicator scores of the kept prefix tokens
  // (card 8 (c): held for cascading re-eviction during prefill).
  int64_t StateBytes() const override {
    return 2 * static_cast<int64_t>(sizeof(double)) +
           num_streams_ * kept_prefix_ * static_cast<int64_t>(sizeof(float));
  }

 private:
  // Group mean of the per-head pooled scores; `per_head(h)` gives head h's raw scores.
  template <typename PerHead>
  static std::vector<double> PooledGroupMean(const StreamView& stream,
                                             int64_t length,
                                             PerHead per_head) {
    std::vector<double> score(static_cast<size_t>(length), 0.0);
    const double inv = 1.0 / static_cast<double>(stream.num_q_heads);
    for (int h = 0; h < stream.num_q_heads; ++h) {
      const std::vector<double> pooled = Pool1d(per_head(h), kPoolKernel, /*max_pool=*/false);
      for (int64_t j = 0; j < length; ++j) {
        score[static_cast<size_t>(j)] += inv * pooled[static_cast<size_t>(j)];
      }
    }
    return score;
  }

  // mean_i A[i, j] + gamma * Var_i A[i, j] over the window rows, j < n - w.
  std::vector<double> PrefillIndicator(const EvictionRequest& request,
                                       const StreamView& stream,
                                       int64_t w) const {
    const int64_t prefix = stream.cache->size() - w;
    KVSIM_ASSERT(stream.cache->size() == request.prefill->prompt_len(),
                 "cake expects the whole prompt resident after prefill");
    return PooledGroupMean(stream, prefix, [&](int h) {
      const Eigen::MatrixXd a =
          request.prefill->WindowAttention(stream.first_q_head + h, w).cast<double>();
      std::vector<double> raw(static_cast<size_t>(prefix));
      for (int64_t j = 0; j < prefix; ++j) {
        const auto column = a.col(j).array();
        const double mean = column.mean();
        const double var =
            w > 1 ? (column - mean).square().sum() / static_cast<double>(w - 1) : 0.0;
        raw[static_cast<size_t>(j)] = mean + options_.gamma * var;
      }
      return raw;
    });
  }

  // The current query's weights over the resident prefix, in position order.
  static std::vector<double> DecodeIndicator(const StreamView& stream,
                                             const std::vector<int64_t>& positions,
                                             int64_t prefix) {
    KVSIM_ASSERT(stream.attention != nullptr, "cake needs the step's attention to evict");
    return PooledGroupMean(stream, prefix, [&](int h) {
      std::vector<double> raw(static_cast<size_t>(prefix));
      for (int64_t j = 0; j < prefix; ++j) {
        const int64_t slot = stream.cache->SlotOf(positions[static_cast<size_t>(j)]);
        raw[static_cast<size_t>(j)] = (*stream.attention)(h, slot);
      }
      return raw;
    });
  }

  // Stream s's resident positions in cakekv's slot order: the order recorded at its last eviction,
  // then the tokens that arrived since, by position. `sorted`: the resident positions, ascending.
  std::vector<int64_t> SlotOrder(size_t s, const std::vector<int64_t>& sorted) const {
    std::vector<int64_t> order = slot_order_[s];
    const int64_t newest = order.empty() ? -1 : *std::max_element(order.begin(), order.end());
    for (const int64_t p : sorted) {
      if (p > newest) order.push_back(p);
    }
    KVSIM_ASSERT(order.size() == sorted.size(), "cake slot order tracks {} of {} tokens",
                 order.size(), sorted.size());
    return order;
  }

  // After a selection over `order`'s first `prefix` slots: the kept prefix by descending score
  // (ties: lower position first), then the slots after the prefix as they were.
  void RecordSlotOrder(size_t s,
                       std::vector<Candidate> candidates,
                       std::span<const int64_t> victims,
                       const std::vector<int64_t>& order,
                       int64_t prefix) {
    std::vector<int64_t> gone(victims.begin(), victims.end());
    std::sort(gone.begin(), gone.end());
    std::erase_if(candidates, [&](const Candidate& c) {
      return std::binary_search(gone.begin(), gone.end(), c.position);
    });
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
      return a.score != b.score ? a.score > b.score : a.position < b.position;
    });
    std::vector<int64_t>& next = slot_order_[s];
    next.clear();
    for (const Candidate& c : candidates) next.push_back(c.position);
    next.insert(next.end(), order.begin() + prefix, order.end());
  }

  CakeOptions options_;
  int64_t num_streams_;
  std::vector<std::vector<int64_t>> slot_order_;  // per stream (decode_order=slot only)
  int64_t slack_ = 0;
  int64_t kept_prefix_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeCake(const PolicyParams& params, const PolicySetup& setup) {
  // window 32, gamma 200, tau1 = tau2 = 1: the fallbacks of pred_cake.py (~L33-37); per-model
  // taus live in model2tau.json, e.g. llama3.1-8b at 1024: tau1=1.6 tau2=0.4 (card 8 (f)).
  CakeOptions options;
  options.window = params.GetInt("window", 32, 1, 1 << 20);
  options.gamma = params.GetDouble("gamma", 200.0, 0.0, 1e9);
  options.tau1 = params.GetDouble("tau1", 1.0, 1e-3, 1e3);
  options.tau2 = params.GetDouble("tau2", 1.0, 1e-3, 1e3);
  static constexpr std::string_view kOrders[] = {"position", "slot"};
  options.slot_order = params.GetChoice("decode_order", "position", kOrders) == "slot";
  params.Validate();
  return std::make_unique<CakePolicy>(setup, options);
}

}  // namespace kvsim::policies
