// `lagkv`: LagKV (Liang et al. 2025, arXiv 2504.04704, card 7). Attention-free: after `sinks`
// sink tokens the stream is cut into chunks of `lag_size` = L tokens, and a token of chunk p is
// scored by how far its key and value stick out of the per-channel [min, max] range of chunk p+1
// (the lag reference), see LagKvStateScores. Scores use K/V alone, per stream (native GQA).
//
// Variants (`variant=`):
//  - official (AI-Lab-China-Merchants-Bank/LagKV lag_kv.py; defaults sinks 16, lag_size 1024,
//    score_v_ratio 1): after every evict phase, while the uncompressed region [b, n) holds at
//    least 2L tokens, its full chunks except the last are compressed, each against its successor,
//    keeping the top floor(ratio * L) of score s^K + score_v_ratio * s^V per chunk; b moves to
//    the last full chunk, which stays as the next reference (card 7 (d)). Compressed tokens are
//    never rescored.
//  - kvpress (kvpress lagkv_press.py; defaults sinks 4, lag_size 128): prefill only. Inside each
//    scored chunk the scores (s^K + s^V) / 2 are rank-normalised (argsort(argsort) / L), sinks and
//    the tail (last full chunk + remainder) are forced to 1, and one global top-k keeps the
//    budget; per-chunk counts are then only approximately equal (card 7 (h)).
//
// Budget mapping (LagKV's budget is a ratio, card 7 (e)): the engine's token budget B is a hard
// cap, slack 0. `ratio` (official only) defaults to 0 = B / n, the budget as a fraction of the
// prompt (kvpress's compression ratio convention); LagKV keeps sinks and the tail whole, so its
// own compression leaves the cache above B, and whenever a stream is still over B after it (also
// when the prompt is shorter than sinks + 2L and no chunk is compressible, e.g. the official
// L = 1024 on short traces) a kvsim extension evicts the rest: first compressed tokens by their
// stored score (lowest first), then uncompressed non-sink tokens oldest first, then sinks newest
// first. The realised cache size is therefore min(LagKV's own, B); in Regime::kPrefill only the
// prefill compression runs (the engine never asks during decode).
//
// Indices are kept as positions, not re-sorted (card 7 (h): irrelevant without position shifts).
// One-shot prefill gives the same selection as LagKV's chunked prefill (scores use K/V only).
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/seed_policy_math.h"
#include "policies/selection.h"

namespace kvsim::policies {

Eigen::VectorXd LagKvStateScores(const Eigen::Ref<const Eigen::MatrixXd>& chunk,
                                 const Eigen::Ref<const Eigen::MatrixXd>& reference) {
  KVSIM_ASSERT(chunk.cols() == reference.cols() && chunk.cols() >= 2,
               "lagkv chunk has {} channels, reference {}; need equal and >= 2", chunk.cols(),
               reference.cols());
  const Eigen::RowVectorXd low = reference.colwise().minCoeff();
  const Eigen::RowVectorXd range =
      (reference.colwise().maxCoeff() - low).array() + kLagKvRangeEpsilon;
  const Eigen::MatrixXd normalised = (chunk.rowwise() - low).array().rowwise() / range.array();
  const Eigen::VectorXd mean = normalised.rowwise().mean();
  const auto d = static_cast<double>(chunk.cols());
  Eigen::VectorXd sigma =
      ((normalised.colwise() - mean).array().square().rowwise().sum() / (d - 1.0)).sqrt();
  sigma = (sigma.array() - sigma.maxCoeff()).exp();
  return sigma / sigma.sum();
}

Eigen::VectorXd LagKvRanks(const Eigen::VectorXd& scores) {
  const auto l = static_cast<size_t>(scores.size());
  std::vector<size_t> order(l);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return scores[static_cast<Eigen::Index>(a)] < scores[static_cast<Eigen::Index>(b)];
  });
  Eigen::VectorXd ranks(scores.size());
  for (size_t r = 0; r < l; ++r) {
    ranks[static_cast<Eigen::Index>(order[r])] = static_cast<double>(r) / static_cast<double>(l);
  }
  return ranks;
}

namespace {

struct LagKvOptions {
  bool kvpress = false;
  int64_t sinks = 16;
  int64_t lag = 1024;
  double ratio = 0.0;  // 0 = budget / prompt
  double v_ratio = 1.0;
};

// Forced-eviction tiers of the budget cap (see the file comment): offsets above any score
// (official scores lie in [0, 1 + score_v_ratio] with score_v_ratio <= 100, ranks in [0, 1)).
constexpr double kTierUncompressed = 1e6;
constexpr double kTierSink = 2e6;

class LagKvPolicy final : public EvictionPolicy {
 public:
  LagKvPolicy(const PolicySetup& setup, LagKvOptions options)
      : options_(options),
        boundary_(static_cast<size_t>(setup.num_streams()), options.sinks),
        scores_(static_cast<size_t>(setup.num_streams()),
                std::vector<float>(static_cast<size_t>(setup.total_len),
                                   std::numeric_limits<float>::quiet_NaN())) {}

  std::string_view Name() const override { return "lagkv"; }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      std::vector<int64_t>& victims = decisions[s].victims;
      const std::vector<int64_t> positions = stream.cache->SortedPositions();
      if (request.after_prefill) {
        const auto n = static_cast<double>(positions.size());
        ratio_ = options_.ratio > 0.0
                     ? options_.ratio
                     : std::clamp(static_cast<double>(request.budget_tokens[s]) / n, 0.0, 1.0);
      }
      if (!options_.kvpress) {
        CompressChunks(stream, positions, &victims);
      } else if (request.after_prefill) {
        GlobalTopK(stream, positions, request.min_victims[s], &victims);
      }
      const int64_t missing = request.min_victims[s] - static_cast<int64_t>(victims.size());
      if (missing > 0) EnforceBudget(stream, positions, missing, &victims);
    }
  }

  void OnEvicted(int stream, std::span<const int64_t> positions) override {
    const std::vector<float>& score = scores_[static_cast<size_t>(stream)];
    for (int64_t pos : positions) {
      if (!std::isnan(score[static_cast<size_t>(pos)])) --scored_resident_;
    }
  }

  // The compression pointer per stream plus, for the budget cap (a kvsim extension: LagKV itself
  // keeps no scores), one float per resident scored token.
  int64_t StateBytes() const override {
    return scored_resident_ * static_cast<int64_t>(sizeof(float)) +
           static_cast<int64_t>(boundary_.size() * sizeof(int64_t));
  }

 private:
  // L x d rows of the cache's keys (or values) for positions[begin, begin + L).
  Eigen::MatrixXd Rows(const sim::KvCache& cache,
                       const std::vector<int64_t>& positions,
                       size_t begin,
                       bool values) const {
    Eigen::MatrixXd rows(options_.lag, cache.head_dim());
    for (int64_t i = 0; i < options_.lag; ++i) {
      const int64_t slot = cache.SlotOf(positions[begin + static_cast<size_t>(i)]);
      rows.row(i) = (values ? cache.ValueRow(slot) : cache.KeyRow(slot)).cast<double>();
    }
    return rows;
  }

  // Scores of the chunk positions[begin, begin + L) against its successor chunk.
  Eigen::VectorXd ChunkScores(const sim::KvCache& cache,
                              const std::vector<int64_t>& positions,
                              size_t begin) const {
    const auto next = begin + static_cast<size_t>(options_.lag);
    const Eigen::VectorXd key =
        LagKvStateScores(Rows(cache, positions, begin, false), Rows(cache, positions, next, false));
    const Eigen::VectorXd value =
        LagKvStateScores(Rows(cache, positions, begin, true), Rows(cache, positions, next, true));
    if (options_.kvpress) return LagKvRanks((key + value) / 2.0);
    return key + options_.v_ratio * value;
  }

  void Store(int stream, int64_t position, double score) {
    scores_[static_cast<size_t>(stream)][static_cast<size_t>(position)] = static_cast<float>(score);
    ++scored_resident_;
  }

  // Official schedule (card 7 (d)).
  void CompressChunks(const StreamView& stream,
                      const std::vector<int64_t>& positions,
                      std::vector<int64_t>* victims) {
    int64_t& boundary = boundary_[static_cast<size_t>(stream.stream)];
    const auto first = static_cast<size_t>(
        std::lower_bound(positions.begin(), positions.end(), boundary) - positions.begin());
    const auto uncompressed = static_cast<int64_t>(positions.size() - first);
    if (uncompressed < 2 * options_.lag) return;
    const int64_t chunks = uncompressed / options_.lag;
    const auto keep = static_cast<int64_t>(std::floor(ratio_ * static_cast<double>(options_.lag)));
    for (int64_t p = 0; p + 1 < chunks; ++p) {
      const size_t begin = first + static_cast<size_t>(p * options_.lag);
      const Eigen::VectorXd score = ChunkScores(*stream.cache, positions, begin);
      std::vector<Candidate> candidates;
      for (int64_t i = 0; i < options_.lag; ++i) {
        candidates.push_back({score[i], positions[begin + static_cast<size_t>(i)]});
      }
      TakeLowest(candidates, options_.lag - keep, victims);
      // TakeLowest moved the survivors behind the victims.
      for (auto it = candidates.begin() + (options_.lag - keep); it != candidates.end(); ++it) {
        Store(stream.stream, it->position, it->score);
      }
    }
    boundary = positions[first + static_cast<size_t>((chunks - 1) * options_.lag)];
  }

  // kvpress: rank-normalised chunk scores, sinks and tail forced to 1, one global top-k. Only
  // the scored tokens compete here (forced ones rank above any of them); if the budget is below
  // sinks + tail, EnforceBudget takes the rest.
  void GlobalTopK(const StreamView& stream,
                  const std::vector<int64_t>& positions,
                  int64_t count,
                  std::vector<int64_t>* victims) {
    const auto n = static_cast<int64_t>(positions.size());
    if (n < options_.sinks + 2 * options_.lag) return;
    const int64_t chunks = (n - options_.sinks) / options_.lag;
    std::vector<Candidate> candidates;
    for (int64_t p = 0; p + 1 < chunks; ++p) {
      const auto begin = static_cast<size_t>(options_.sinks + p * options_.lag);
      const Eigen::VectorXd ranks = ChunkScores(*stream.cache, positions, begin);
      for (int64_t i = 0; i < options_.lag; ++i) {
        candidates.push_back({ranks[i], positions[begin + static_cast<size_t>(i)]});
      }
    }
    boundary_[static_cast<size_t>(stream.stream)] =
        positions[static_cast<size_t>(options_.sinks + (chunks - 1) * options_.lag)];
    const int64_t take = std::min<int64_t>(count, static_cast<int64_t>(candidates.size()));
    TakeLowest(candidates, take, victims);
    for (auto it = candidates.begin() + take; it != candidates.end(); ++it) {
      Store(stream.stream, it->position, it->score);
    }
  }

  // The budget cap (kvsim extension, see the file comment).
  void EnforceBudget(const StreamView& stream,
                     const std::vector<int64_t>& positions,
                     int64_t count,
                     std::vector<int64_t>* victims) {
    std::vector<int64_t> taken = *victims;
    std::sort(taken.begin(), taken.end());
    const std::vector<float>& stored = scores_[static_cast<size_t>(stream.stream)];
    std::vector<Candidate> candidates;
    for (int64_t pos : positions) {
      if (std::binary_search(taken.begin(), taken.end(), pos)) continue;
      const float s = stored[static_cast<size_t>(pos)];
      const double key = pos < options_.sinks ? kTierSink - static_cast<double>(pos)
                         : std::isnan(s)      ? kTierUncompressed
                                              : static_cast<double>(s);
      candidates.push_back({key, pos});
    }
    TakeLowest(candidates, count, victims);
  }

  LagKvOptions options_;
  double ratio_ = 1.0;             // resolved after prefill
  std::vector<int64_t> boundary_;  // [stream]: first position of the uncompressed region
  // [stream][position]: score of a compressed survivor (official score or kvpress rank), NaN if
  // the token was never scored.
  std::vector<std::vector<float>> scores_;
  int64_t scored_resident_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeLagKv(const PolicyParams& params, const PolicySetup& setup) {
  static constexpr std::string_view kVariants[] = {"official", "kvpress"};
  LagKvOptions options;
  options.kvpress = params.GetChoice("variant", "official", kVariants) == "kvpress";
  // Official class defaults (lag_kv.py ~L21-36): sink_size 16, lag_size 1024, score_v_ratio 1.
  // kvpress (lagkv_press.py): n_sink 4, lag_size 128 (card 7 (f)).
  options.sinks = params.GetInt("sinks", options.kvpress ? 4 : 16, 0, 1 << 20);
  options.lag = params.GetInt("lag_size", options.kvpress ? 128 : 1024, 1, 1 << 20);
  if (!options.kvpress) {
    // The official default ratio is 0.5; kvsim defaults to 0 = budget / prompt so that the
    // budget axis of a sweep means something (see the file comment). ratio=0.5 reproduces it.
    options.ratio = params.GetDouble("ratio", 0.0, 0.0, 1.0);
    options.v_ratio = params.GetDouble("score_v_ratio", 1.0, 0.0, 100.0);
  }
  params.Validate();
  if (setup.shape.head_dim < 2) {
    ThrowInputError(
        "policy 'lagkv': head_dim {} is too small: the lag score is a standard "
        "deviation over channels, expected head_dim >= 2",
        setup.shape.head_dim);
  }
  return std::make_unique<LagKvPolicy>(setup, options);
}

}  // namespace kvsim::policies
