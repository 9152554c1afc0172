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
#include <vector>

#include "common/error.h"
#include "policies/paging/marking.h"

namespace kvsim::paging {
namespace {

class Mark0Policy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    KVSIM_ASSERT(!setup.bits.empty() || setup.requests->requests() == 0,
                 "mark0 replayed without prediction bits");
    bits_ = setup.bits.data();
    marks_.Reset(setup.requests->num_pages());
    latest_bit_.assign(setup.requests->num_pages(), 0);
    discardable_.Reset(setup.requests->num_pages());
    kept_.Reset(setup.requests->num_pages());
  }
  void OnHit(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    if (marks_.IsMarked(page)) return;
    marks_.Mark(page);
    (discardable_.Contains(page) ? discardable_ : kept_).Remove(page);
  }
  void OnInsert(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    marks_.Admit(page);
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    if (discardable_.empty() && kept_.empty()) {
      marks_.NewPhase(pins,
                      [&](uint32_t p) { (latest_bit_[p] ? discardable_ : kept_).PushFront(p); });
    }
    PageList& from = discardable_.empty() ? kept_ : discardable_;
    const uint32_t victim = from.Back();
    from.Remove(victim);
    marks_.Drop(victim);
    return victim;
  }

 private:
  const uint8_t* bits_ = nullptr;
  Marks marks_;
  std::vector<uint8_t> latest_bit_;
  PageList discardable_;  // unmarked, latest bit 1, admission order
  PageList kept_;         // unmarked, latest bit 0, admission order
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeMark0Policy() { return std::make_unique<Mark0Policy>(); }

}  // namespace kvsim::paging
