// CLOCK (second chance): a ring of cache_size slots with a hand and one reference bit per page.
// A hit sets the bit; an admitted page starts with the bit clear (libCacheSim's Clock) and takes
// the victim's slot, the hand moving past it. On a fault the hand clears set bits and evicts the
// first page whose bit is clear. Pinned pages are passed over without clearing their bit.
#include <memory>
#include <vector>

#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

class ClockPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    slots_.assign(static_cast<size_t>(setup.cache_size), 0);
    referenced_.assign(setup.requests->num_pages(), 0);
    filled_ = 0;
    hand_ = 0;
    free_slot_ = -1;
  }
  void OnHit(int64_t, uint32_t page) override { referenced_[page] = 1; }
  void OnInsert(int64_t, uint32_t page) override {
    size_t slot = 0;
    if (free_slot_ >= 0) {
      slot = static_cast<size_t>(free_slot_);
      free_slot_ = -1;
      hand_ = Next(slot);
    } else {
      slot = filled_++;
    }
    slots_[slot] = page;
    referenced_[page] = 0;
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    while (true) {
      const uint32_t page = slots_[hand_];
      if (pins.IsPinned(page)) {
        hand_ = Next(hand_);
      } else if (referenced_[page]) {
        referenced_[page] = 0;
        hand_ = Next(hand_);
      } else {
        free_slot_ = static_cast<int64_t>(hand_);
        return page;
      }
    }
  }

 private:
  size_t Next(size_t slot) const { return slot + 1 == slots_.size() ? 0 : slot + 1; }

  std::vector<uint32_t> slots_;
  std::vector<uint8_t> referenced_;
  size_t filled_ = 0;  // slots used before the first eviction
  size_t hand_ = 0;
  int64_t free_slot_ = -1;  // the slot the last victim left, filled by the next OnInsert
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeClockPolicy() { return std::make_unique<ClockPolicy>(); }

}  // namespace kvsim::paging
