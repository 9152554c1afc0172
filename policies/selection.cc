#include "policies/selection.h"

#include <algorithm>

#include "common/error.h"

namespace kvsim::policies {

void TakeLowest(std::vector<Candidate>& candidates, int64_t count, std::vector<int64_t>* victims) {
  KVSIM_ASSERT(count >= 0 && count <= static_cast<int64_t>(candidates.size()),
               "cannot take {} of {} candidates", count, candidates.size());
  if (count == 0) return;
  const auto less = [](const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score < b.score : a.position < b.position;
  };
  const auto nth = candidates.begin() + count;
  if (nth != candidates.end())
    std::nth_element(candidates.begin(), nth - 1, candidates.end(), less);
  std::sort(candidates.begin(), nth, less);
  for (auto it = candidates.begin(); it != nth; ++it) victims->push_back(it->position);
}

Eigen::VectorXf GroupMeanAttention(const StreamView& stream) {
  KVSIM_ASSERT(stream.attention != nullptr, "stream {} has no attention in this view",
               stream.stream);
  return stream.attention->colwise().mean().transpose();
}

}  // namespace kvsim::policies
