// FIFO: evict the page admitted earliest; hits do not reorder. k-competitive, not a stack
// algorithm (Belady's anomaly).
#include <memory>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

class FifoPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override { order_.Reset(setup.requests->num_pages()); }
  void OnHit(int64_t, uint32_t) override {}
  void OnInsert(int64_t, uint32_t page) override { order_.PushFront(page); }
  // The oldest unpinned page: pinned pages are skipped, not reordered.
  uint32_t Evict(int64_t, const PinView& pins) override {
    uint32_t victim = order_.Back();
    while (pins.IsPinned(victim)) victim = order_.Newer(victim);
    order_.Remove(victim);
    return victim;
  }

 private:
  PageList order_;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeFifoPolicy() { return std::make_unique<FifoPolicy>(); }

}  // namespace kvsim::paging
