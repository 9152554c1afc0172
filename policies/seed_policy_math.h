#pragma once
// The pure arithmetic of three seed policies, exposed so tests can check it against hand
// computations without driving a replay: LagKV's lag-relative chunk scores (card 7), CAKE's layer
// budget allocation and cascading peak (card 8), D2O's layer allocation and merge weights
// (card 9). Each function is defined next to its policy (policies/lagkv.cc, cake.cc, d2o.cc).
#include <Eigen/Dense>
#include <cstdint>
#include <span>
#include <vector>

namespace kvsim::policies {

// ---- LagKV (card 7 (b)) ----

// Added to every reference channel range M_c - m_c before dividing: the official code has no
// guard, so a channel that is constant over the reference chunk gives NaN (card 7 (h)). With it
// that channel normalises to (x - m) / 1e-6: finite, and large exactly when the chunk leaves the
// reference's (zero-width) range.
inline constexpr double kLagKvRangeEpsilon = 1e-6;

// softmax over the L rows of `chunk` of sigma_i, the unbiased standard deviation over the d
// channels of (chunk[i, c] - m_c) / (M_c - m_c + kLagKvRangeEpsilon), with m, M the per-channel
// min and max of `reference`. chunk and reference are L x d, d >= 2. Finite for any finite input.
Eigen::VectorXd LagKvStateScores(const Eigen::Ref<const Eigen::MatrixXd>& chunk,
                                 const Eigen::Ref<const Eigen::MatrixXd>& reference);

// kvpress's rank normalisation of one chunk's scores: argsort(argsort(score)) / L, so the lowest
// score maps to 0 and the highest to (L-1)/L. Ties keep index order (stable).
Eigen::VectorXd LagKvRanks(const Eigen::VectorXd& scores);

// ---- CAKE (card 8 (b), (d)) ----

// CAKE's adjust_budgets (cake/utils.py): `raw` are the truncated shares floor(P_l / sum P * T).
// Caps each layer at `cap` (= n - w) and spreads the excess equally over the uncapped layers
// (remainder to the first ones), repeating until none exceeds the cap; then moves the total to
// `total` (= T) with equal increments over layers below the cap or equal decrements over layers
// above 1 (remainder to the first ones). The result sums to `total` whenever
// layers * 1 <= total <= layers * cap.
std::vector<int64_t> CakeAdjustBudgets(std::vector<int64_t> raw, int64_t cap, int64_t total);

// Prefix budgets B_l (window excluded) for layer preferences `preference` (P_l = H^(1/tau1) *
// V^(1/tau2)) against total T = `total`, capped at n - w = `cap`: truncated proportional shares,
// then CakeAdjustBudgets. All-zero or non-finite preferences fall back to equal shares.
std::vector<int64_t> CakeLayerBudgets(std::span<const double> preference,
                                      int64_t cap,
                                      int64_t total);

// Peak resident prompt tokens per stream, summed over layers, during a layer-by-layer prefill.
struct CakePrefillPeak {
  // Cascading (card 8 (d)): layer l is admitted whole (n tokens) while layers 0..l-1 hold
  // B_m + w with budgets from P_0..P_{l-1} against the full T; max over l.
  int64_t cascading = 0;
  // One-shot: every layer holds its whole prompt until all preferences are known: layers * n.
  int64_t one_shot = 0;
};
CakePrefillPeak CakePrefillPeakTokens(std::span<const double> preference,
                                      int64_t prompt_len,
                                      int64_t window,
                                      int64_t total);

// ---- D2O (card 9 (b)) ----

// Tokens per stream of every layer: protected layers (`is_protected`) get kUnlimitedTokens; the
// others share softmax_l(-F_l) over themselves, ratio_l = clamp(softmax * layers * rho, 0.01, 1)
// with rho = budget / (n + 1), size_l = floor((n+1) ratio_l (1 - recent_share)) +
// floor((n+1) ratio_l recent_share); if the 0.01 floor pushed the sum above layers * budget, the
// largest layers give back the excess one token at a time (lowest index first among equals).
std::vector<int64_t> D2oLayerBudgets(std::span<const double> density,
                                     const std::vector<bool>& is_protected,
                                     int64_t prompt_len,
                                     int64_t budget,
                                     double recent_share);

enum class D2oMerge {
  kPaper,  // Eq. 9-12: w_e = exp(u_e) / (sum exp(u) + e), w_c = e / (sum exp(u) + e); sum = 1
  kCode,   // official: w_c = 1 / (1 + m), w_e = u_e / (1 + m); sums to < 1 when some u_e < 1
};

// Weights of a merge into one survivor from the similarities `u` of the m tokens merged into it:
// element 0 is the survivor's weight, element 1 + e the weight of merged token e.
std::vector<double> D2oMergeWeights(std::span<const double> u, D2oMerge mode);

}  // namespace kvsim::policies
