#pragma once
// Where each structure of a synthetic trace sits (positions, phases, segments), private to
// traces/synthetic. The layout is shared by every layer and head.
#include <vector>

#include "traces/synthetic/random.h"
#include "traces/synthetic/synthetic.h"

namespace kvsim::traces::synthetic {

// Turns before the question: `turns`, or 2 * topics when turns is 0.
int EffectiveTurns(const SynthParams& p);

// Draws the layout from `rng` and appends the multi-turn segments (if any) to `segments`.
// Throws InputError naming the argument if the prompt is too short to place the tokens.
SynthLayout BuildLayout(const SynthParams& p, Rng& rng, std::vector<Segment>& segments);

}  // namespace kvsim::traces::synthetic
