// Tie rules and tie counting of TakeLowest (issue 13), against hand-worked selections.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "policies/selection.h"
#include "sim/selection_scope.h"

namespace kvsim::policies {
namespace {

// Scores 1, 2, 2, 2, 3 at positions 0..4: taking two evicts position 0 and one of the three
// tied at score 2; taking four evicts the whole tied run, so no tie decides anything.
std::vector<Candidate> FlatRun() { return {{2.0, 2}, {3.0, 4}, {2.0, 1}, {1.0, 0}, {2.0, 3}}; }

std::vector<int64_t> Take(sim::TieRule rule, uint64_t seed, int64_t count, sim::SelectionTally* t) {
  const sim::SelectionScope scope(rule, seed, t);
  std::vector<Candidate> candidates = FlatRun();
  std::vector<int64_t> victims;
  TakeLowest(candidates, count, &victims);
  return victims;
}

TEST(Ties, NewestRuleEvictsTheOlderOfEqualScoresAndCountsTheTie) {
  sim::SelectionTally tally;
  EXPECT_EQ(Take(sim::TieRule::kKeepNewest, 0, 2, &tally), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(tally.victims, 2);
  EXPECT_EQ(tally.tie_victims, 1);  // position 1 could have been 2 or 3
}

TEST(Ties, OldestRuleEvictsTheNewerOfEqualScores) {
  sim::SelectionTally tally;
  EXPECT_EQ(Take(sim::TieRule::kKeepOldest, 0, 2, &tally), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(tally.tie_victims, 1);
}

TEST(Ties, AWholeTiedRunTakenIsNotATie) {
  sim::SelectionTally tally;
  EXPECT_EQ(Take(sim::TieRule::kKeepNewest, 0, 4, &tally), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(tally.victims, 4);
  EXPECT_EQ(tally.tie_victims, 0);
  Take(sim::TieRule::kKeepNewest, 0, 1, &tally);  // score 1 is unique
  EXPECT_EQ(tally.victims, 5);
  EXPECT_EQ(tally.tie_victims, 0);
}

TEST(Ties, RandomRuleIsSeededAndReachesEveryTiedPosition) {
  std::set<int64_t> picked;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    sim::SelectionTally tally;
    const std::vector<int64_t> victims = Take(sim::TieRule::kRandom, seed, 2, &tally);
    ASSERT_EQ(victims.size(), 2u);
    EXPECT_EQ(victims[0], 0);  // the unique lowest score is not a tie
    EXPECT_EQ(victims, Take(sim::TieRule::kRandom, seed, 2, &tally)) << "seed " << seed;
    picked.insert(victims[1]);
    EXPECT_EQ(tally.tie_victims, 2);
  }
  EXPECT_EQ(picked, (std::set<int64_t>{1, 2, 3}));
}

TEST(Ties, OutsideAScopeTheDefaultRuleHoldsAndNothingIsCounted) {
  std::vector<Candidate> candidates = FlatRun();
  std::vector<int64_t> victims;
  TakeLowest(candidates, 2, &victims);
  EXPECT_EQ(victims, (std::vector<int64_t>{0, 1}));
}

}  // namespace
}  // namespace kvsim::policies
