// SIEVE (Zhang et al., NSDI 2024): one FIFO queue (newest at the head), a visited bit per page
// and a hand that persists between evictions. Reproduces libCacheSim
// libCacheSim/cache/eviction/Sieve.c: a hit sets the bit; an admitted page enters at the head
// with the bit clear; on a fault the hand (at the tail on the first eviction or after it ran off
// the head) walks towards the head, clearing set bits, wraps to the tail past the head, and
// evicts the first page whose bit is clear; the hand then rests on the victim's newer neighbour.
// Departs only under step semantics: a pinned page under the hand is passed over with its bit
// unchanged (so the walk ends: after one lap every unpinned bit is clear).
#include <memory>
#include <vector>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

class SievePolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    queue_.Reset(setup.requests->num_pages());
    visited_.assign(setup.requests->num_pages(), 0);
    hand_ = queue_.end();
  }
  void OnHit(int64_t, uint32_t page) override { visited_[page] = 1; }
  void OnInsert(int64_t, uint32_t page) override {
    queue_.PushFront(page);
    visited_[page] = 0;
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    uint32_t page = hand_ == queue_.end() ? queue_.Back() : hand_;
    while (pins.IsPinned(page) || visited_[page]) {
      if (!pins.IsPinned(page)) visited_[page] = 0;
      page = queue_.Newer(page);
      if (page == queue_.end()) page = queue_.Back();
    }
    hand_ = queue_.Newer(page);
    queue_.Remove(page);
    return page;
  }

 private:
  PageList queue_;                // Front = newest
  std::vector<uint8_t> visited_;  // by page
  uint32_t hand_ = 0;             // next page to examine; queue_.end() = start at the tail
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeSievePolicy() { return std::make_unique<SievePolicy>(); }

}  // namespace kvsim::paging
