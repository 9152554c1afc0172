// `gate` (card 5): replays recorded Attention-Gate keep/evict flags on hand-built cases.
#include <gtest/gtest.h>

#include <span>
#include <vector>

#include "models/model_loader.h"
#include "models/sampler.h"
#include "policy_test_util.h"
#include "sim/closed_loop.h"

namespace kvsim::policies {
namespace {

using testing::ReplayAll;
using testing::TinyShape;

// Flags [L=2, Hkv=2, T=16]: layer l, head h evicts positions p with (p + l + h) % 3 == 0, except
// that decode position 13 is evicted by every head.
traces::Trace FlaggedTrace() {
  traces::Trace trace = sim::RandomTrace(TinyShape(), 10, 16, 3);
  std::vector<uint8_t> flags;
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      for (int64_t p = 0; p < 16; ++p) {
        flags.push_back((p + l + h) % 3 == 0 || p == 13 ? 0 : 1);
      }
    }
  }
  trace.set_gate_flags(std::move(flags));
  return trace;
}

bool Kept(int64_t p, int l, int h) { return !((p + l + h) % 3 == 0 || p == 13); }

TEST(GatePolicy, KeepsExactlyTheFlaggedTokens) {
  const traces::Trace trace = FlaggedTrace();
  for (const sim::Regime regime : {sim::Regime::kBounded, sim::Regime::kPrefill}) {
    for (const sim::GqaMode gqa : {sim::GqaMode::kKvHead, sim::GqaMode::kQueryHead}) {
      sim::ReplayOptions options;
      options.regime = regime;
      options.gqa_mode = gqa;
      const testing::ResidentLog log = ReplayAll(trace, "gate", PolicyParams(), 4, options);
      for (int l = 0; l < 2; ++l) {
        for (int64_t t = 10; t < 16; ++t) {
          const auto& streams = log[static_cast<size_t>(l)][static_cast<size_t>(t - 10)];
          for (size_t s = 0; s < streams.size(); ++s) {
            const int h =
                gqa == sim::GqaMode::kKvHead ? static_cast<int>(s) : static_cast<int>(s) / 2;
            std::vector<int64_t> expected;
            for (int64_t p = 0; p <= t; ++p) {
              // Prompt tokens go after prefill; a decode token is attended at its own step and goes
              // at the next evict phase (bounded regime), or stays (prefill regime).
              const bool decode = p >= 10;
              const bool evicted =
                  !Kept(p, l, h) && (!decode || (regime == sim::Regime::kBounded && p < t));
              if (!evicted) expected.push_back(p);
            }
            EXPECT_EQ(streams[s], expected) << "layer " << l << " stream " << s << " step " << t;
          }
        }
      }
    }
  }
}

TEST(GatePolicy, RefusesATraceWithoutFlags) {
  traces::Trace trace = sim::RandomTrace(TinyShape(), 10, 12, 3);
  trace.set_gate_flags({});
  try {
    ReplayAll(trace, "gate", PolicyParams(), 4);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/gate_flags"), std::string::npos) << e.what();
  }
}

const models::LoadedModel& Stories() {
  static const models::LoadedModel loaded = models::LoadModel(models::BundledModelPath());
  return loaded;
}

// `gate` in the closed loop replays recorded flags by position: prompt positions flagged 0 leave
// after prefill, a flagged decode token after its own step's attention. Checked against a
// hand-driven KvState dropping the same positions.
TEST(GatePolicy, ClosedLoopReplaysRecordedFlagsAsAHandDrivenState) {
  const std::vector<int32_t> prompt =
      Stories().RequireTokenizer().Encode("Once upon a time there was a little girl", true, false);
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t steps = 8;
  const models::LlamaModel& model = Stories().model;
  const models::ModelShape shape = model.config().Shape("test");
  const std::vector<int64_t> dropped_prompt = {1, 3};
  const int64_t dropped_decode = n + 2;
  std::vector<uint8_t> head(static_cast<size_t>(n + steps), 1);
  for (const int64_t p : dropped_prompt) head[static_cast<size_t>(p)] = 0;
  head[static_cast<size_t>(dropped_decode)] = 0;
  sim::ClosedLoopOptions options;
  options.new_tokens = steps;
  options.budget_tokens = kUnlimitedTokens;
  options.gate_flags.assign(
      static_cast<size_t>(shape.layers),
      std::vector<std::vector<uint8_t>>(static_cast<size_t>(shape.kv_heads), head));
  const sim::LayerPolicyFactory gate = [](const policies::PolicySetup& setup) {
    return MakePolicy("gate", PolicyParams{}, setup);
  };
  const sim::ClosedLoopResult r = sim::RunClosedLoop(model, prompt, options, gate);

  models::KvState full = model.NewState();
  models::KvState evicted = model.NewState();
  model.Forward(prompt, full);
  model.Forward(prompt, evicted);
  const auto drop = [&](const std::vector<int64_t>& positions) {
    for (int l = 0; l < evicted.layers(); ++l) {
      for (int h = 0; h < evicted.kv_heads(); ++h) evicted.Drop(l, h, positions);
    }
  };
  drop(dropped_prompt);
  int64_t gone = 2;
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t t = n + k;
    const int32_t token[] = {r.full_tokens[static_cast<size_t>(t)]};
    const RowMatrixXf lf = model.Forward(token, full);
    const RowMatrixXf le = model.Forward(token, evicted);
    const sim::ClosedLoopStep& row = r.steps[static_cast<size_t>(k)];
    EXPECT_DOUBLE_EQ(row.resident_mean, static_cast<double>(t + 1 - gone)) << k;
    if (t == dropped_decode) {
      drop({t});
      ++gone;
    }
    const std::span<const float> f(lf.data(), static_cast<size_t>(lf.cols()));
    const std::span<const float> e(le.data(), static_cast<size_t>(le.cols()));
    EXPECT_NEAR(row.kl, sim::KlDivergence(f, e), 1e-6) << k;
    EXPECT_EQ(row.teacher_next, models::Argmax(e)) << k;
  }
  EXPECT_GT(r.kl_mean, 0.0);
  // Too few flags for the run is a clean error.
  options.gate_flags[0][0].resize(static_cast<size_t>(n));
  EXPECT_THROW(sim::RunClosedLoop(model, prompt, options, gate), InputError);
}

}  // namespace
}  // namespace kvsim::policies
