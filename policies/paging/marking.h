#pragma once
// Marking-algorithm bookkeeping shared by marker, rmarker and phase-pred (Fiat et al. 1991):
// a requested page is marked; when a fault finds no unmarked resident page a new phase starts
// and every resident page is unmarked, except the pages the current step already requested
// (they are pinned, and the new phase begins with this step). Every marking algorithm is
// k-competitive whatever rule picks among the unmarked pages.
#include <cstdint>
#include <vector>

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

}  // namespace kvsim::paging
