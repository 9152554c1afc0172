// LFU: evict the resident page with the fewest requests since its admission (in-cache counts,
// reset on eviction, as libCacheSim's LFU), ties broken by least recent request. Not
// competitive: a once-hot page can hold a slot forever.
#include <cstdint>
#include <memory>
#include <utility>

#include "policies/paging/indexed_heap.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

// (count, last request index): the smallest is the victim.
using LfuKey = std::pair<int64_t, int64_t>;
struct FewerOrOlder {
  bool operator()(const LfuKey& a, const LfuKey& b) const { return a < b; }
};

class LfuPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override { heap_.Reset(setup.requests->num_pages()); }
  void OnHit(int64_t index, uint32_t page) override {
    heap_.Update(page, {heap_.KeyOf(page).first + 1, index});
  }
  void OnInsert(int64_t index, uint32_t page) override { heap_.Push(page, {1, index}); }
  uint32_t Evict(int64_t, const PinView& pins) override {
    return PopUnpinned(heap_, pins, scratch_);
  }

 private:
  IndexedHeap<LfuKey, FewerOrOlder> heap_;
  std::vector<uint32_t> scratch_;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeLfuPolicy() { return std::make_unique<LfuPolicy>(); }

}  // namespace kvsim::paging
