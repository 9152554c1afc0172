#pragma once
// Faithful Lookahead Q-Cache (LAQ / LAQ++, arXiv 2505.20334, card 6): the pseudo lookahead
// queries come from the model itself, so these policies exist only where kvsim has the model in
// the loop (`kvsim closed-loop --policy laq`). They are deliberately NOT in the open-loop
// registry (policies/all.def): a plain trace has no model, and `replay --policy laq` fails as an
// unknown policy; the trace-only upper bounds are `laq-oracle` / `laqpp-oracle`.
//
// Card 6 (b): after the full prefill, y0 = argmax of the prompt's last logits;
//  stage 1: a COPY of the prompt cache is compressed with SnapKV (window w1 = 32, kernel 7, max
//           pooling, budget C = the final budget; the window is min(32, C) as in SnapKV);
//  pseudo:  greedy decode from y0 on that copy until m = 8 queries are collected or EOS (the
//           query of y0 itself is the first); their K/V are thrown away with the copy;
//  stage 2: on the full prompt cache, policies/laq_scoring.h (SelectStage2Victims) with the last
//           w2 prompt queries + the pseudo queries, which see every prompt key (the correct mask,
//           card 6 (h)). LAQ: w2 = 0; LAQ++: w2 = 8.
// Decode steps in Regime::kBounded (a kvsim extension; LAQ never evicts during decode): SnapKV's
// decode rule with a window of w2 + m queries, as `laq-oracle` does.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/tensor.h"
#include "policies/laq_scoring.h"
#include "policies/policy_params.h"
#include "sim/closed_loop.h"

namespace kvsim::policies {

// The stage-1 observation window of card 6 (f) (lookahead_window_size).
inline constexpr int64_t kLaqStage1Window = 32;

// The pseudo lookahead of one prompt: per layer, the post-RoPE queries [q_heads, m', d] of the
// m' <= options.lookahead pseudo decode steps at positions n, n+1, ... (m' < m only at EOS or
// the context length), and the tokens those steps ran (y0 first).
struct LaqLookahead {
  std::vector<HeadTensor> queries;
  std::vector<int32_t> tokens;
  int64_t count() const { return static_cast<int64_t>(tokens.size()); }
};

// Stage 1 + pseudo decoding. Never modifies *context.prompt_state.
LaqLookahead GenerateLaqLookahead(const sim::ModelContext& context, const LaqOptions& options);

// Names only closed-loop can run: "laq", "laqpp".
std::vector<std::string> ClosedLoopOnlyPolicyNames();

// A per-layer factory for closed-loop runs: `laq` / `laqpp` (faithful, parameters lookahead,
// window, kernel, pooling as laq-oracle) or any name of the open-loop registry. The faithful
// instances of one run (layers 0 .. L-1, built in order) share one lookahead, generated once.
// Throws InputError for an unknown name or bad parameters (checked here, before any run).
sim::LayerPolicyFactory ClosedLoopPolicyFactory(std::string_view name, const PolicyParams& params);

}  // namespace kvsim::policies
