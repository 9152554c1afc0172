#include "policies/laq.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "common/error.h"
#include "models/sampler.h"
#include "policies/registry.h"
#include "policies/snapkv_scoring.h"

namespace kvsim::policies {
namespace {

// Records the queries of one-token forwards: step `index` writes row `index` of each layer.
class PseudoQueryRecorder final : public models::ForwardObserver {
 public:
  explicit PseudoQueryRecorder(LaqLookahead& out) : out_(out) {}
  void set_index(int64_t index) { index_ = index; }
  void OnLayer(const models::LayerActivations& act) override {
    HeadTensor& q = out_.queries[static_cast<size_t>(act.layer)];
    for (int h = 0; h < q.heads(); ++h) {
      std::copy_n(act.q.row(0).data() + static_cast<Eigen::Index>(h) * q.dim(), q.dim(),
                  q.Row(h, index_));
    }
  }

 private:
  LaqLookahead& out_;
  int64_t index_ = 0;
};

// Card 6 (b) step 2: SnapKV on a copy of the prompt cache (stage-2 selection with the last
// min(32, C) prompt queries as the protected observation window is exactly SnapKV's rule).
void CompressStage1(const sim::ModelContext& context,
                    const LaqOptions& options,
                    models::KvState& state) {
  const int64_t n = context.prompt_len;
  const int64_t budget = context.budget_tokens;
  if (budget >= n) return;
  const int g = context.model->config().q_heads / context.model->config().kv_heads;
  LaqOptions stage1 = options;
  stage1.window = std::min(kLaqStage1Window, budget);
  std::vector<int64_t> positions(static_cast<size_t>(stage1.window));
  for (int64_t i = 0; i < stage1.window; ++i)
    positions[static_cast<size_t>(i)] = n - stage1.window + i;
  for (int l = 0; l < state.layers(); ++l) {
    for (int s = 0; s < state.kv_heads(); ++s) {
      KVSIM_ASSERT(state.size(l, s) == n, "stage 1 expects the whole prompt resident");
      std::vector<RowMatrixXf> head_rows;
      for (int h = s * g; h < (s + 1) * g; ++h) {
        const ConstMatrixMap q(
            context.prompt_queries[static_cast<size_t>(l)]->Row(h, n - stage1.window),
            stage1.window, context.model->config().head_dim());
        head_rows.push_back(ObservationAttention(state.keys(l, s), q, positions));
      }
      std::vector<int64_t> victims;
      SelectStage2Victims(head_rows, stage1, budget, n - budget, &victims);
      state.Drop(l, s, victims);
    }
  }
}

// State shared by the faithful instances of one run.
struct LaqShared {
  bool generated = false;
  LaqLookahead lookahead;
};

class FaithfulLaqPolicy final : public sim::ModelInLoopPolicy {
 public:
  FaithfulLaqPolicy(std::string_view name,
                    const PolicySetup& setup,
                    LaqOptions options,
                    std::shared_ptr<LaqShared> shared)
      : name_(name),
        setup_(setup),
        options_(options),
        decode_(setup, DecodeOptions(options)),
        shared_(std::move(shared)) {}

  std::string_view Name() const override { return name_; }
  void AttachModel(const sim::ModelContext& context) override {
    if (!shared_->generated) {
      shared_->lookahead = GenerateLaqLookahead(context, options_);
      shared_->generated = true;
    }
  }
  void OnStep(const StepView& step) override { decode_.OnStep(step); }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    if (!request.after_prefill) {
      decode_.SelectVictims(request, decisions);
      return;
    }
    KVSIM_ASSERT(shared_->generated, "faithful LAQ used without AttachModel");
    const int64_t n = setup_.prompt_len;
    const HeadTensor& pseudo = shared_->lookahead.queries[static_cast<size_t>(setup_.layer)];
    const int64_t m = shared_->lookahead.count();
    std::vector<int64_t> positions(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) positions[static_cast<size_t>(i)] = n + i;
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      KVSIM_ASSERT(stream.cache->size() == n, "LAQ expects the whole prompt resident");
      const int64_t window = std::min(options_.window, request.budget_tokens[s]);
      std::vector<RowMatrixXf> head_rows;
      for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
        RowMatrixXf rows(window + m, n);
        if (window > 0) rows.topRows(window) = request.prefill->WindowAttention(h, window);
        if (m > 0) {
          rows.bottomRows(m) =
              ObservationAttention(request.prefill->PromptKeys(stream.kv_head),
                                   ConstMatrixMap(pseudo.Row(h, 0), m, pseudo.dim()), positions);
        }
        head_rows.push_back(std::move(rows));
      }
      SelectStage2Victims(head_rows, options_, request.budget_tokens[s], count,
                          &decisions[s].victims);
    }
  }
  int64_t StateBytes() const override { return decode_.StateBytes(); }

 private:
  // As laq-oracle: SnapKV's decode rule over the last w2 + m queries (card 6 (f) all_query).
  static SnapKvOptions DecodeOptions(const LaqOptions& options) {
    SnapKvOptions decode;
    decode.window = std::max<int64_t>(1, options.window + options.lookahead);
    decode.kernel = options.kernel;
    decode.max_pool = options.max_pool;
    return decode;
  }

  std::string_view name_;
  PolicySetup setup_;
  LaqOptions options_;
  SnapKvScoring decode_;
  std::shared_ptr<LaqShared> shared_;
};

// Card 6 (f): LAQ has no protected window, LAQ++ protects w2 = 8 (stage2_window_size).
int64_t DefaultWindow(std::string_view name) { return name == "laqpp" ? 8 : 0; }

}  // namespace

LaqLookahead GenerateLaqLookahead(const sim::ModelContext& context, const LaqOptions& options) {
  KVSIM_ASSERT(context.model != nullptr && context.prompt_state != nullptr, "no model context");
  const models::LlamaConfig& config = context.model->config();
  const int64_t n = context.prompt_len;
  const int64_t m = std::min<int64_t>(options.lookahead, config.context_length - n);
  LaqLookahead out;
  for (int l = 0; l < config.layers; ++l) {
    out.queries.emplace_back(config.q_heads, std::max<int64_t>(m, 0), config.head_dim());
  }
  models::KvState copy = *context.prompt_state;
  CompressStage1(context, options, copy);
  PseudoQueryRecorder recorder(out);
  int32_t token = context.first_token;
  for (int64_t i = 0; i < m; ++i) {
    recorder.set_index(i);
    const int32_t tokens[] = {token};
    const RowMatrixXf logits = context.model->Forward(tokens, copy, &recorder);
    out.tokens.push_back(token);
    token = models::Argmax({logits.data(), static_cast<size_t>(logits.cols())});
    if (token == context.eos_token) break;
  }
  return out;
}

std::vector<std::string> ClosedLoopOnlyPolicyNames() { return {"laq", "laqpp"}; }

sim::LayerPolicyFactory ClosedLoopPolicyFactory(std::string_view name, const PolicyParams& params) {
  if (name == "laq" || name == "laqpp") {
    PolicyParams named = params;
    named.set_policy_name(std::string(name));
    const LaqOptions options = ReadLaqOptions(named, DefaultWindow(name));
    named.Validate();
    const std::string_view stable_name = name == "laq" ? "laq" : "laqpp";
    auto current = std::make_shared<std::shared_ptr<LaqShared>>();
    return [stable_name, options, current](const PolicySetup& setup) {
      if (setup.layer == 0 || *current == nullptr) *current = std::make_shared<LaqShared>();
      return std::unique_ptr<EvictionPolicy>(
          std::make_unique<FaithfulLaqPolicy>(stable_name, setup, options, *current));
    };
  }
  std::vector<std::string> names = PolicyNames();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    for (std::string& extra : ClosedLoopOnlyPolicyNames()) names.push_back(std::move(extra));
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    ThrowInputError("--policy: unknown policy '{}': expected one of {}", name, list);
  }
  CheckPolicy(name, params);
  return [policy = std::string(name), params](const PolicySetup& setup) {
    return MakePolicy(policy, params, setup);
  };
}

}  // namespace kvsim::policies
