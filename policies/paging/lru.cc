// LRU: evict the least recently requested page (Sleator-Tarjan 1985: k-competitive).
#include <memory>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

class LruPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override { order_.Reset(setup.requests->num_pages()); }
  void OnHit(int64_t, uint32_t page) override { order_.MoveToFront(page); }
  void OnInsert(int64_t, uint32_t page) override { order_.PushFront(page); }
  // Pinned pages were requested this step, so they sit at the front: the walk from the back
  // stops at once unless the step's pins fill the cache (which the engine excludes).
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

std::unique_ptr<PagingPolicy> MakeLruPolicy() { return std::make_unique<LruPolicy>(); }

}  // namespace kvsim::paging
