// Mark0 with discard predictions (Antoniadis et al., "Paging with Succinct Predictions", ICML
// 2023, setup 1; card memory-and-paging.md 6.5): the robust, marking form of "follow the bits".
// The bit of a request says whether its page may be evicted before its next request
// (1 = discardable). Every requested page is marked, whatever its bit; on a fault Mark0 evicts an
// unmarked page, preferring one whose latest bit is 1 (the earliest admitted of those), else the
// earliest-admitted unmarked page (Marker's rule); when no page is unmarked a new phase starts
// (policies/paging/marking.h). Never evicting a marked page makes it a marking algorithm, so it
// faults at most k times per phase and stays k-competitive whatever the bits (robustness); the
// bits only choose among unmarked pages. Wrong "keep" bits (eta0) make it evict a needed
// unmarked page instead, at most k - 1 extra faults per phase; a wrong "discard" (eta1) costs
// the one refetch of the page it evicted.
//
// Not cache-coliseum's Mark0, which also drops a page right after a request with bit 1: that
// evicts a marked page, so it is no longer a marking algorithm (the card's note).
#include <memory>

#include "policies/paging/marking.h"

namespace kvsim::paging {

std::unique_ptr<PagingPolicy> MakeMark0Policy() {
  return std::make_unique<BitGuidedMarker>("mark0", /*evict_first_bit=*/1);
}

}  // namespace kvsim::paging
