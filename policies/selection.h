#pragma once
// Small helpers shared by policy implementations: ranking candidates into victims and reducing a
// stream's attention over its query heads. Deterministic: equal scores are ordered by the tie
// rule of the sim::SelectionScope the call runs in (by default the older position goes first).
#include <Eigen/Dense>
#include <cstdint>
#include <vector>

#include "policies/eviction_policy.h"
#include "sim/selection_scope.h"

namespace kvsim::policies {

struct Candidate {
  double score = 0.0;  // higher = more worth keeping
  int64_t position = 0;
};

// Appends to `victims` the `count` candidates with the lowest score; equal scores in the order
// of the current tie rule. Reorders `candidates`. REQUIRES count <= size.
void TakeLowest(std::vector<Candidate>& candidates, int64_t count, std::vector<int64_t>* victims);

// Per resident slot of `stream`: the mean of its query heads' attention weights (the GQA group
// mean of card section 0; a single row in GqaMode::kQueryHead). REQUIRES stream.attention.
Eigen::VectorXf GroupMeanAttention(const StreamView& stream);

}  // namespace kvsim::policies
