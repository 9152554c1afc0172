// `kivi`: KIVI 2-bit KV quantization (Liu et al., ICML 2024; memory-and-paging.md card 3) as a
// cache mode: nothing is evicted, tokens are demoted to the quantized tier by rewrites that hold
// the fake-quantized (quantize + dequantize) K/V, so attention carries the real error.
//  - Keys: per channel, one (scale, zero) per group of `group_size` consecutive tokens. An FP key
//    buffer grows by one token per step; when it holds `residual` tokens the whole buffer is
//    quantized (llama_kivi.py ~L121-142), so it cycles between 0 and residual-1 tokens. After
//    prefill L - (L mod residual) keys are quantized.
//  - Values: per token, one (scale, zero) per group of `group_size` channels. The FP value window
//    keeps exactly the last `residual` tokens; older ones are quantized one per step (~L165-185).
// An entry's tier becomes kQuantized as soon as its key or its value is; the exact bytes of each
// part come from TierBytes.
//
// KIVI acts at every decode step in both regimes (ActsEveryStep). No token budget (card 3 (e)):
// LayerBudget is unlimited and memory is fixed by (bits, group_size, residual).
#include <algorithm>
#include <map>
#include <memory>

#include "common/error.h"
#include "policies/registry.h"
#include "sim/quantization.h"

namespace kvsim::policies {
namespace {

class KiviPolicy final : public EvictionPolicy {
 public:
  KiviPolicy(const PolicySetup& setup, int key_bits, int value_bits, int group, int residual)
      : shape_(setup.shape),
        key_bits_(key_bits),
        value_bits_(value_bits),
        group_(group),
        residual_(residual),
        quantized_keys_(static_cast<size_t>(setup.num_streams()), 0),
        quantized_values_(static_cast<size_t>(setup.num_streams()), 0) {}

  std::string_view Name() const override { return "kivi"; }
  int64_t LayerBudget(const BudgetPlanView& /*plan*/) override { return kUnlimitedTokens; }
  bool IgnoresBudget() const override { return true; }
  bool ActsEveryStep() const override { return true; }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const sim::KvCache& cache = *stream.cache;
      // KIVI never evicts, so the resident positions are exactly 0 .. size-1.
      const int64_t n = cache.size();
      std::map<int64_t, sim::EntryRewrite> rewrites;
      auto rewrite_of = [&](int64_t position) -> sim::EntryRewrite& {
        auto [it, inserted] = rewrites.try_emplace(position);
        if (inserted) {
          const int64_t slot = cache.SlotOf(position);
          KVSIM_ASSERT(slot >= 0, "kivi: position {} is not resident", position);
          it->second = sim::EntryRewrite{.position = position,
                                         .key = cache.KeyRow(slot).transpose(),
                                         .value = cache.ValueRow(slot).transpose(),
                                         .merged_tokens = 0,
                                         .tier = sim::PrecisionTier::kQuantized};
        }
        return it->second;
      };
      int64_t& nk = quantized_keys_[s];
      RowMatrixXf block(group_, shape_.head_dim);
      while (n - nk >= residual_) {
        for (int64_t g = nk; g < nk + residual_; g += group_) {
          for (int64_t r = 0; r < group_; ++r) block.row(r) = rewrite_of(g + r).key.transpose();
          sim::FakeQuantizeKeysPerChannel(block, key_bits_, group_);
          for (int64_t r = 0; r < group_; ++r) rewrite_of(g + r).key = block.row(r).transpose();
        }
        nk += residual_;
      }
      int64_t& nv = quantized_values_[s];
      for (; n - nv > residual_; ++nv) {
        Eigen::VectorXf& v = rewrite_of(nv).value;
        sim::FakeQuantizePerToken(std::span<float>(v.data(), static_cast<size_t>(v.size())),
                                  value_bits_, group_);
      }
      for (auto& [position, rewrite] : rewrites) {
        decisions[s].rewrites.push_back(std::move(rewrite));
      }
    }
  }

  std::optional<sim::KvTierBytes> TierBytes(std::span<const StreamView> streams) const override {
    sim::KvTierBytes bytes;
    for (const StreamView& stream : streams) {
      bytes +=
          StreamBytes(stream.cache->size(), quantized_keys_[static_cast<size_t>(stream.stream)],
                      quantized_values_[static_cast<size_t>(stream.stream)]);
    }
    return bytes;
  }

  // After an evict phase with n tokens, SelectVictims has quantized keys in whole residual
  // windows (n - n mod residual) and every value but the newest `residual`.
  std::optional<sim::KvTierBytes> KeepAllStreamBytes(int64_t context) const override {
    return StreamBytes(context, context - context % residual_,
                       std::max<int64_t>(0, context - residual_));
  }

 private:
  // One stream holding n tokens, keys [0, nk) and values [0, nv) quantized.
  sim::KvTierBytes StreamBytes(int64_t n, int64_t nk, int64_t nv) const {
    const int d = shape_.head_dim;
    const sim::KvTierBytes key_group = sim::KeyChannelGroupBytes(d, key_bits_, group_);
    const sim::KvTierBytes value_token = sim::PerTokenVectorBytes(d, value_bits_, group_);
    const int64_t fp_vector = static_cast<int64_t>(d) * shape_.kv_bytes_per_element;
    sim::KvTierBytes bytes;
    bytes.full = (n - nk + n - nv) * fp_vector;
    bytes.quantized = nk / group_ * key_group.quantized + nv * value_token.quantized;
    bytes.metadata = nk / group_ * key_group.metadata + nv * value_token.metadata;
    return bytes;
  }

  models::ModelShape shape_;
  int key_bits_;
  int value_bits_;
  int group_;
  int residual_;
  std::vector<int64_t> quantized_keys_;    // per stream: keys [0, nk) are quantized
  std::vector<int64_t> quantized_values_;  // per stream: values [0, nv) are quantized
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeKivi(const PolicyParams& params, const PolicySetup& setup) {
  // Defaults: utils/process_args.py k_bits = v_bits = 2; group 32 and residual 128 as in the
  // LongBench results (docs/long_bench.md; process_args.py has group 128).
  const auto key_bits = static_cast<int>(params.GetInt("k_bits", 2, 1, 8));
  const auto value_bits = static_cast<int>(params.GetInt("v_bits", 2, 1, 8));
  const auto group = static_cast<int>(params.GetInt("group_size", 32, 1, 4096));
  const auto residual = static_cast<int>(params.GetInt("residual", 128, 1, 1 << 20));
  params.Validate();
  if (residual % group != 0) {
    ThrowInputError(
        "policy 'kivi': residual={} is not a multiple of "
        "group_size={} (KIVI card 3)",
        residual, group);
  }
  return std::make_unique<KiviPolicy>(setup, key_bits, value_bits, group, residual);
}

}  // namespace kvsim::policies
