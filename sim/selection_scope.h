#pragma once
// The context of a policy's selection: how ties are ordered and where the tie counts go
// (issue 13: results say how many decisions hinged on a tie). Set by the replay engine around
// each SelectVictims call, read by policies::TakeLowest, so no policy carries it by hand.
#include <cstdint>

#include "sim/budget.h"

namespace kvsim::sim {

// Victims chosen by TakeLowest, and how many of them a tie decided: the victims whose score equals
// the boundary score (the highest score taken) when a candidate with that same score was kept.
// Another tie rule could have swapped each of them for a kept one.
struct SelectionTally {
  int64_t victims = 0;
  int64_t tie_victims = 0;
};

// Installs, on the calling thread and for its lifetime, the tie rule TakeLowest uses and the
// tally it adds to (the replay engine wraps each SelectVictims call in one; policies::TakeLowest
// reads it). `seed` orders TieRule::kRandom ties. Outside any scope: kKeepNewest, nothing tallied.
class SelectionScope {
 public:
  SelectionScope(TieRule rule, uint64_t seed, SelectionTally* tally);
  ~SelectionScope();
  SelectionScope(const SelectionScope&) = delete;
  SelectionScope& operator=(const SelectionScope&) = delete;

  TieRule rule() const { return rule_; }
  uint64_t seed() const { return seed_; }
  SelectionTally* tally() const { return tally_; }
  // The innermost scope on this thread, or null.
  static const SelectionScope* Current();

 private:
  TieRule rule_;
  uint64_t seed_;
  SelectionTally* tally_;
  const SelectionScope* previous_;
};

}  // namespace kvsim::sim
