#include "policies/selection.h"

#include <algorithm>

#include "common/error.h"

namespace kvsim::policies {
namespace {

// SplitMix64's finaliser: a fixed pseudo-random order of positions for one seed.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

template <class Less>
void TakeLowestBy(std::vector<Candidate>& candidates,
                  int64_t count,
                  std::vector<int64_t>* victims,
                  Less less) {
  const auto nth = candidates.begin() + count;
  if (nth != candidates.end())
    std::nth_element(candidates.begin(), nth - 1, candidates.end(), less);
  std::sort(candidates.begin(), nth, less);
  for (auto it = candidates.begin(); it != nth; ++it) victims->push_back(it->position);
}

}  // namespace

void TakeLowest(std::vector<Candidate>& candidates, int64_t count, std::vector<int64_t>* victims) {
  KVSIM_ASSERT(count >= 0 && count <= static_cast<int64_t>(candidates.size()),
               "cannot take {} of {} candidates", count, candidates.size());
  if (count == 0) return;
  const sim::SelectionScope* scope = sim::SelectionScope::Current();
  const sim::TieRule rule = scope != nullptr ? scope->rule() : sim::TieRule::kKeepNewest;
  switch (rule) {
    case sim::TieRule::kKeepNewest:
      TakeLowestBy(candidates, count, victims, [](const Candidate& a, const Candidate& b) {
        return a.score != b.score ? a.score < b.score : a.position < b.position;
      });
      break;
    case sim::TieRule::kKeepOldest:
      TakeLowestBy(candidates, count, victims, [](const Candidate& a, const Candidate& b) {
        return a.score != b.score ? a.score < b.score : a.position > b.position;
      });
      break;
    case sim::TieRule::kRandom: {
      const uint64_t seed = scope->seed();
      TakeLowestBy(candidates, count, victims, [seed](const Candidate& a, const Candidate& b) {
        if (a.score != b.score) return a.score < b.score;
        const uint64_t ka = Mix(seed ^ static_cast<uint64_t>(a.position));
        const uint64_t kb = Mix(seed ^ static_cast<uint64_t>(b.position));
        return ka != kb ? ka < kb : a.position < b.position;
      });
      break;
    }
  }
  sim::SelectionTally* tally = scope != nullptr ? scope->tally() : nullptr;
  if (tally == nullptr) return;
  // candidates[0, count) are the victims, in order: the last has the boundary score.
  const double boundary = candidates[static_cast<size_t>(count - 1)].score;
  int64_t tied_victims = 0;
  for (int64_t i = count - 1; i >= 0 && candidates[static_cast<size_t>(i)].score == boundary; --i) {
    ++tied_victims;
  }
  const bool tied_keeper =
      std::any_of(candidates.begin() + count, candidates.end(),
                  [boundary](const Candidate& c) { return c.score == boundary; });
  tally->victims += count;
  if (tied_keeper) tally->tie_victims += tied_victims;
}

Eigen::VectorXf GroupMeanAttention(const StreamView& stream) {
  KVSIM_ASSERT(stream.attention != nullptr, "stream {} has no attention in this view",
               stream.stream);
  return stream.attention->colwise().mean().transpose();
}

}  // namespace kvsim::policies
