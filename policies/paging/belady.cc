// Belady's MIN / farthest-in-future (Belady 1966): on a fault evict the resident page whose next
// request is farthest away ("never again" counts as infinity; ties among those go to the smallest
// dense id, i.e. the page first requested earliest). Optimal for unit pages in offload mode. The
// next uses come precomputed in DenseRequests (O(n)); an indexed max-heap over resident pages
// makes each request O(log k). With set requests the step's pinned pages are skipped, FitF on the
// rest; tests/paging/opt_test.cc checks optimality against exhaustive search.
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "policies/paging/indexed_heap.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

// (next use, -page): the largest is the victim.
using BeladyKey = std::pair<int64_t, int64_t>;
struct Farther {
  bool operator()(const BeladyKey& a, const BeladyKey& b) const { return a > b; }
};

class BeladyPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    next_use_ = setup.requests->next_use.data();
    heap_.Reset(setup.requests->num_pages());
  }
  void OnHit(int64_t index, uint32_t page) override { heap_.Update(page, Key(index, page)); }
  void OnInsert(int64_t index, uint32_t page) override { heap_.Push(page, Key(index, page)); }
  uint32_t Evict(int64_t, const PinView& pins) override {
    return PopUnpinned(heap_, pins, scratch_);
  }

 private:
  BeladyKey Key(int64_t index, uint32_t page) const {
    return {next_use_[index], -static_cast<int64_t>(page)};
  }

  const int64_t* next_use_ = nullptr;
  IndexedHeap<BeladyKey, Farther> heap_;
  std::vector<uint32_t> scratch_;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeBeladyPolicy() { return std::make_unique<BeladyPolicy>(); }

}  // namespace kvsim::paging
