// `gate` (card 5): replays recorded Attention-Gate keep/evict flags on hand-built cases.
#include <gtest/gtest.h>

#include "policy_test_util.h"

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

}  // namespace
}  // namespace kvsim::policies
