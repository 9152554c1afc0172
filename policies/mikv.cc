// `mikv`: MiKV, "No Token Left Behind" (Yang et al. 2024; memory-and-paging.md card 2): tokens that
// H2O would evict are kept at low precision instead. Modelled as the card's two-tier cache in a
// BYTE budget, so that "evict" and "keep at 2 bits" compete at equal memory: the engine's token
// budget B per stream is read as B full-precision tokens' worth of bytes,
//   B * 2 * head_dim * kv_bytes_per_element,
// the same memory `h2o` with budget B holds. Every resident token costs either the full-precision
// price or the low-tier price (per-token asymmetric quantization of its key and its value, groups
// of `group_size` channels, FP16 scale + zero per group). At each evict phase:
//  1. if even all-low-precision does not fit, the lowest-importance tokens outside the recent
//     window are evicted;
//  2. the high-precision set shrinks to what the remaining bytes pay for: its `recent` newest
//     tokens are protected, the rest ranked by importance, and the losers are demoted (one-way,
//     card 2 (d)).
// Importance = H2O's accumulated attention (prompt column sums, then every decode step, group mean
// over the stream's query heads), computed over the dequantized keys as they are (card 2 (h):
// quantization error feeds back into importance). recent = floor(recent_ratio * high-precision
// capacity), the H2O split.
//
// Outlier balancer (card 2 (b)): beta per (stream, channel) from the prompt's queries (the group's
// heads) and keys, frozen after prefill; a demoted key is stored as dequant(quant(k * beta)) /
// beta, which equals attending with q / beta over the balanced key.
//
// A demoted entry reaches the cache as its codes (sim::PerTokenCodec), not as float rows: at 32k
// tokens a float copy of every low-precision entry was the largest state of a long sweep (issue
// 11), and the codes decode to the same floats.
//
// High precision is the trace's precision (FP16 by the shape's kv_bytes_per_element); the paper's
// "higher integer precision" variant of the important set is not modelled. Demotion only happens at
// evict phases, so in Regime::kPrefill decode tokens stay at full precision (the regime's growth)
// once the prompt is compressed.
#include <algorithm>
#include <cmath>
#include <memory>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/selection.h"
#include "sim/quantization.h"

namespace kvsim::policies {
namespace {

class MiKvPolicy final : public EvictionPolicy {
 public:
  MiKvPolicy(const PolicySetup& setup, int bits, int group, double recent_ratio, bool balance)
      : shape_(setup.shape),
        bits_(bits),
        group_(group),
        recent_ratio_(recent_ratio),
        balance_(balance),
        scores_(static_cast<size_t>(setup.num_streams()),
                std::vector<double>(static_cast<size_t>(setup.total_len), 0.0)),
        beta_(static_cast<size_t>(setup.num_streams()),
              Eigen::VectorXf::Ones(setup.shape.head_dim)) {
    codec_of_stream_.assign(beta_.size(), nullptr);
    for (size_t s = 0; s < beta_.size(); ++s) SetCodec(s);
    const sim::KvTierBytes vector = sim::PerTokenVectorBytes(shape_.head_dim, bits_, group_);
    low_token_bytes_ = 2 * (vector.quantized + vector.metadata);
    full_token_bytes_ = shape_.KvBytesPerTokenPerHead();
  }

  std::string_view Name() const override { return "mikv"; }

  int64_t LayerBudget(const BudgetPlanView& plan) override {
    budget_bytes_ = plan.uniform_budget_tokens >= kUnlimitedTokens / full_token_bytes_
                        ? kUnlimitedTokens
                        : plan.uniform_budget_tokens * full_token_bytes_;
    return kUnlimitedTokens;  // the byte budget is enforced here, not by the
                              // token count
  }

  void OnPrefill(const PrefillView& prefill) override {
    for (const StreamView& stream : prefill.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const float inv = 1.0f / static_cast<float>(stream.num_q_heads);
      for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
        const Eigen::VectorXf& sums = prefill.attention->ColumnSums(h);
        for (int64_t j = prefill.begin; j < prefill.end; ++j) {
          scores_[s][static_cast<size_t>(j)] += static_cast<double>(inv * sums[j]);
        }
      }
      if (!balance_) continue;
      RowMatrixXf queries(stream.num_q_heads * prefill.end, shape_.head_dim);
      for (int i = 0; i < stream.num_q_heads; ++i) {
        queries.middleRows(i * prefill.end, prefill.end) =
            prefill.queries.Rows(stream.first_q_head + i, 0, prefill.end);
      }
      beta_[s] = sim::OutlierBalance(
          queries, prefill.attention->PromptKeys(stream.kv_head).topRows(prefill.end));
      SetCodec(s);
    }
  }

  void OnStep(const StepView& step) override {
    for (const StreamView& stream : step.streams) {
      std::vector<double>& score = scores_[static_cast<size_t>(stream.stream)];
      const Eigen::VectorXf mean = GroupMeanAttention(stream);
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        score[static_cast<size_t>(stream.cache->Position(slot))] += mean[slot];
      }
    }
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    // A serving pool's current share (sim::Budget::schedule) caps the byte budget.
    const int64_t budget_bytes =
        request.budget_cap_tokens < kUnlimitedTokens / full_token_bytes_
            ? std::min(budget_bytes_, request.budget_cap_tokens * full_token_bytes_)
            : budget_bytes_;
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const sim::KvCache& cache = *stream.cache;
      // 1. Evict until every survivor fits at low precision. As in H2O (card 2: the important
      // set is the top tokens together with the recent window), the newest recent_ratio share of
      // the survivors is protected: a fresh decode token's score is one step's attention, so
      // without the window new tokens would always be the first to go.
      const int64_t n = cache.size();
      const int64_t fit_low =
          budget_bytes >= kUnlimitedTokens ? n : budget_bytes / low_token_bytes_;
      const int64_t evict = std::max<int64_t>(request.min_victims[s], n - fit_low);
      std::vector<int64_t>& victims = decisions[s].victims;
      if (evict > 0) {
        const std::vector<int64_t> positions = cache.SortedPositions();
        const auto keep_recent =
            static_cast<int64_t>(std::floor(recent_ratio_ * static_cast<double>(n - evict)));
        std::vector<Candidate> older;
        for (int64_t i = 0; i < n - keep_recent; ++i) {
          const int64_t p = positions[static_cast<size_t>(i)];
          older.push_back({scores_[s][static_cast<size_t>(p)], p});
        }
        TakeLowest(older, evict, &victims);
      }
      std::sort(victims.begin(), victims.end());
      // 2. The high-precision tokens the remaining bytes pay for.
      const int64_t survivors = n - static_cast<int64_t>(victims.size());
      const int64_t capacity =
          budget_bytes >= kUnlimitedTokens
              ? survivors
              : std::max<int64_t>(0, (budget_bytes - survivors * low_token_bytes_) /
                                         (full_token_bytes_ - low_token_bytes_));
      std::vector<int64_t> high;  // resident full-precision survivors, position order
      for (const sim::CacheEntry& e : cache.entries()) {
        if (e.tier == sim::PrecisionTier::kFull &&
            !std::binary_search(victims.begin(), victims.end(), e.position)) {
          high.push_back(e.position);
        }
      }
      const auto excess = static_cast<int64_t>(high.size()) - capacity;
      if (excess <= 0) continue;
      std::sort(high.begin(), high.end());
      const auto recent = std::min<int64_t>(
          static_cast<int64_t>(high.size()),
          static_cast<int64_t>(std::floor(recent_ratio_ * static_cast<double>(capacity))));
      std::vector<Candidate> demotable;
      for (size_t i = 0; i + static_cast<size_t>(recent) < high.size(); ++i) {
        demotable.push_back({scores_[s][static_cast<size_t>(high[i])], high[i]});
      }
      std::vector<int64_t> demoted;
      TakeLowest(demotable, std::min<int64_t>(excess, static_cast<int64_t>(demotable.size())),
                 &demoted);
      // Protected recent tokens go too when the capacity is below the recent window.
      for (size_t i = high.size() - static_cast<size_t>(recent);
           static_cast<int64_t>(demoted.size()) < excess; ++i) {
        demoted.push_back(high[i]);
      }
      for (const int64_t position : demoted) {
        decisions[s].rewrites.push_back(Demote(cache, s, position));
      }
    }
  }

  std::optional<sim::KvTierBytes> TierBytes(std::span<const StreamView> streams) const override {
    const sim::KvTierBytes vector = sim::PerTokenVectorBytes(shape_.head_dim, bits_, group_);
    sim::KvTierBytes bytes;
    for (const StreamView& stream : streams) {
      const int64_t low = stream.cache->CountTier(sim::PrecisionTier::kQuantized);
      bytes.full += (stream.cache->size() - low) * full_token_bytes_;
      bytes.quantized += 2 * low * vector.quantized;
      bytes.metadata += 2 * low * vector.metadata;
    }
    return bytes;
  }

  // A double score per position of each stream (kept for the whole trace, as the official per-slot
  // vectors but without compaction) and the frozen balancer, head_dim floats per stream.
  int64_t StateBytes() const override {
    int64_t bytes = 0;
    for (size_t s = 0; s < scores_.size(); ++s) {
      bytes += static_cast<int64_t>(scores_[s].size() * sizeof(double)) +
               static_cast<int64_t>(beta_[s].size()) * static_cast<int64_t>(sizeof(float));
    }
    return bytes;
  }

 private:
  sim::EntryRewrite Demote(const sim::KvCache& cache, size_t stream, int64_t position) const {
    const int64_t slot = cache.SlotOf(position);
    const sim::PerTokenCodec& codec = *codec_of_stream_[stream];
    return sim::EntryRewrite{
        .position = position,
        .merged_tokens = 0,
        .tier = sim::PrecisionTier::kQuantized,
        .codec = &codec,
        .encoded = codec.Encode(cache.KeyRow(slot).data(), cache.ValueRow(slot).data())};
  }

  // A stream's codec follows its balancer. A balancer computed again (a later prompt chunk) gets
  // a new codec; the old one stays alive for the entries already encoded with it.
  void SetCodec(size_t stream) {
    codecs_.push_back(
        std::make_unique<sim::PerTokenCodec>(shape_.head_dim, bits_, group_, beta_[stream]));
    codec_of_stream_[stream] = codecs_.back().get();
  }

  models::ModelShape shape_;
  int bits_;
  int group_;
  double recent_ratio_;
  bool balance_;
  std::vector<std::vector<double>> scores_;  // [stream][position]
  std::vector<Eigen::VectorXf> beta_;        // [stream] per channel; ones without balancing
  std::vector<std::unique_ptr<sim::PerTokenCodec>> codecs_;  // every codec made, kept alive
  std::vector<const sim::PerTokenCodec*> codec_of_stream_;   // [stream] the current one
  int64_t low_token_bytes_ = 0;                              // K + V of one low-precision token
  int64_t full_token_bytes_ = 0;                             // K + V of one full-precision token
  int64_t budget_bytes_ = kUnlimitedTokens;                  // per stream
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeMiKv(const PolicyParams& params, const PolicySetup& setup) {
  // bits = 2: the card's memory example (b_lo = 2); the paper also runs INT3/INT4. group_size 0 =
  // one group per token vector (card 2 (b): "a vector x, one token's key or value"; the paper's
  // group size is [verify]).
  const auto bits = static_cast<int>(params.GetInt("bits", 2, 1, 8));
  const auto group = static_cast<int>(params.GetInt("group_size", 0, 0, 4096));
  // 0.5: H2O's 1:1 heavy/recent split (as `h2o`).
  const double recent_ratio = params.GetDouble("recent_ratio", 0.5, 0.0, 1.0);
  const bool balance = params.GetBool("balance", true);
  params.Validate();
  return std::make_unique<MiKvPolicy>(setup, bits, group == 0 ? setup.shape.head_dim : group,
                                      recent_ratio, balance);
}

}  // namespace kvsim::policies
