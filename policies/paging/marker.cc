// Deterministic Marker: on a fault evict the earliest-admitted unmarked page. (LRU among the
// unmarked pages would coincide with LRU itself, since every unmarked page was requested before
// every marked one; admission order makes this a distinct marking algorithm.)
#include <memory>

#include "policies/paging/marking.h"

namespace kvsim::paging {
namespace {

class MarkerPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    marks_.Reset(setup.requests->num_pages());
    unmarked_.Reset(setup.requests->num_pages());
  }
  void OnHit(int64_t, uint32_t page) override {
    if (marks_.IsMarked(page)) return;
    marks_.Mark(page);
    unmarked_.Remove(page);
  }
  void OnInsert(int64_t, uint32_t page) override { marks_.Admit(page); }
  uint32_t Evict(int64_t, const PinView& pins) override {
    if (unmarked_.empty()) marks_.NewPhase(pins, [&](uint32_t p) { unmarked_.PushFront(p); });
    const uint32_t victim = unmarked_.Back();
    unmarked_.Remove(victim);
    marks_.Drop(victim);
    return victim;
  }

 private:
  Marks marks_;
  PageList unmarked_;  // admission order
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeMarkerPolicy() { return std::make_unique<MarkerPolicy>(); }

}  // namespace kvsim::paging
