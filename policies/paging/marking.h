#pragma once
// Marking-algorithm bookkeeping shared by marker, rmarker, phase-pred and mark0 (Fiat et al. 1991):
// a requested page is marked; when a fault finds no unmarked resident page a new phase starts
// and every resident page is unmarked, except the pages the current step already requested
// (they are pinned, and the new phase begins with this step). Every marking algorithm is
// k-competitive whatever rule picks among the unmarked pages.
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {

class Marks {
 public:
  void Reset(uint32_t num_pages) {
    phase_ = 0;
    marked_in_.assign(num_pages, -1);
    resident_.Reset(num_pages);
  }
  bool IsMarked(uint32_t page) const { return marked_in_[page] == phase_; }
  void Mark(uint32_t page) { marked_in_[page] = phase_; }
  // Resident pages in admission order (Back() = earliest admitted).
  const PageList& resident() const { return resident_; }
  void Admit(uint32_t page) {
    resident_.PushFront(page);
    Mark(page);
  }
  void Drop(uint32_t page) { resident_.Remove(page); }
  // Starts a phase; calls `unmarked(page)` for each resident page it unmarks, earliest admitted
  // first.
  template <typename Fn>
  void NewPhase(const PinView& pins, Fn&& unmarked) {
    ++phase_;
    for (uint32_t p = resident_.Back(); p != resident_.end(); p = resident_.Newer(p)) {
      if (pins.IsPinned(p)) {
        Mark(p);
      } else {
        unmarked(p);
      }
    }
  }

 private:
  int64_t phase_ = 0;
  std::vector<int64_t> marked_in_;  // phase in which the page was last marked
  PageList resident_;
};

// A marking algorithm guided by one bit per request: on a fault it evicts the earliest-admitted
// unmarked page whose latest bit is `evict_first_bit`, else the earliest-admitted unmarked page.
// Mark&Predict (phase-pred, bit 0 = "not requested next phase") and Mark0 (mark0, bit 1 =
// "discardable") are this rule with opposite bit meanings; being marking algorithms, both stay
// k-competitive whatever the bits.
class BitGuidedMarker final : public PagingPolicy {
 public:
  BitGuidedMarker(const char* name, uint8_t evict_first_bit)
      : name_(name), evict_first_bit_(evict_first_bit) {}
  void Reset(const PolicySetup& setup) override {
    KVSIM_ASSERT(!setup.bits.empty() || setup.requests->requests() == 0,
                 "{} replayed without prediction bits", name_);
    bits_ = setup.bits.data();
    marks_.Reset(setup.requests->num_pages());
    latest_bit_.assign(setup.requests->num_pages(), 0);
    first_.Reset(setup.requests->num_pages());
    rest_.Reset(setup.requests->num_pages());
  }
  void OnHit(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    if (marks_.IsMarked(page)) return;
    marks_.Mark(page);
    (first_.Contains(page) ? first_ : rest_).Remove(page);
  }
  void OnInsert(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    marks_.Admit(page);
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    if (first_.empty() && rest_.empty()) {
      marks_.NewPhase(pins, [&](uint32_t p) {
        (latest_bit_[p] == evict_first_bit_ ? first_ : rest_).PushFront(p);
      });
    }
    PageList& from = first_.empty() ? rest_ : first_;
    const uint32_t victim = from.Back();
    from.Remove(victim);
    marks_.Drop(victim);
    return victim;
  }

 private:
  const char* name_;
  uint8_t evict_first_bit_;
  const uint8_t* bits_ = nullptr;
  Marks marks_;
  std::vector<uint8_t> latest_bit_;
  PageList first_;  // unmarked, latest bit == evict_first_bit_, admission order
  PageList rest_;   // the other unmarked pages, admission order
};

}  // namespace kvsim::paging
