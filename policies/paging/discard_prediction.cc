// "Follow the bits" with discard predictions (Antoniadis et al., "Paging with Succinct
// Predictions", ICML 2023, setup 1; card memory-and-paging.md 6.5). The bit of a request says
// whether its page may be evicted before its next request (1 = discardable). On a fault evict the
// least recently used page whose latest bit is 1; if there is none (only possible with wrong
// bits), the least recently used page of all. With correct bits (those of Belady's own run) it
// faults exactly as often as Belady: it only evicts pages Belady also evicts before their reuse.
// This is the 1-consistent, non-robust form; wrong "keep" bits can clog slots.
#include <memory>

#include "common/error.h"
#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

class DiscardPredictionPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    KVSIM_ASSERT(!setup.bits.empty() || setup.requests->requests() == 0,
                 "discard-pred replayed without prediction bits");
    bits_ = setup.bits.data();
    discardable_.Reset(setup.requests->num_pages());
    kept_.Reset(setup.requests->num_pages());
  }
  void OnHit(int64_t index, uint32_t page) override {
    (discardable_.Contains(page) ? discardable_ : kept_).Remove(page);
    OnInsert(index, page);
  }
  void OnInsert(int64_t index, uint32_t page) override {
    (bits_[index] ? discardable_ : kept_).PushFront(page);
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    for (PageList* list : {&discardable_, &kept_}) {
      for (uint32_t p = list->Back(); p != list->end(); p = list->Newer(p)) {
        if (!pins.IsPinned(p)) {
          list->Remove(p);
          return p;
        }
      }
    }
    KVSIM_ASSERT(false, "discard-pred found no unpinned page");
  }

 private:
  const uint8_t* bits_ = nullptr;
  PageList discardable_;  // latest bit 1, most recent first
  PageList kept_;         // latest bit 0, most recent first
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeDiscardPredictionPolicy() {
  return std::make_unique<DiscardPredictionPolicy>();
}

}  // namespace kvsim::paging
