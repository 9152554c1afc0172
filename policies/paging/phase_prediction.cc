// Mark&Predict with phase predictions (Antoniadis et al., "Paging with Succinct Predictions",
// ICML 2023, setup 2; card memory-and-paging.md 6.5). The bit of a request says whether its page
// will be requested in the next phase (1 = yes). A marking algorithm: on a fault it evicts the
// earliest-admitted unmarked page whose latest bit is 0 (predicted absent from this phase), else
// the earliest-admitted unmarked page. With correct bits it faults only on each phase's new
// pages, sum_i c_i <= 2 OPT; being a marking algorithm it stays k-competitive with any bits.
#include <memory>

#include "policies/paging/marking.h"

namespace kvsim::paging {

std::unique_ptr<PagingPolicy> MakePhasePredictionPolicy() {
  return std::make_unique<BitGuidedMarker>("phase-pred", /*evict_first_bit=*/0);
}

}  // namespace kvsim::paging
