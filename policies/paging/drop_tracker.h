#pragma once
// What a self-managed paging policy (PagingPolicy::ManagesResidency()) reports after each request:
// the pages the engine holds resident that the policy no longer holds, once each. The policy
// touches every page its structures lose during a request; Report() keeps those it no longer
// holds (a page moved from one structure to another is touched but still held).
#include <cstdint>
#include <vector>

namespace kvsim::paging {

class DropTracker {
 public:
  void Reset(uint32_t num_pages) {
    held_.assign(num_pages, 0);
    touched_.clear();
  }
  // The requested page of a miss: the engine holds it from now on, until reported.
  void Admit(uint32_t page) {
    held_[page] = 1;
    touched_.push_back(page);
  }
  void Touch(uint32_t page) { touched_.push_back(page); }
  // Appends to `dropped` every touched page the engine holds and `holds(page)` denies.
  template <class Holds>
  void Report(const Holds& holds, std::vector<uint32_t>& dropped) {
    for (const uint32_t page : touched_) {
      if (held_[page] != 0 && !holds(page)) {
        held_[page] = 0;
        dropped.push_back(page);
      }
    }
    touched_.clear();
  }

 private:
  std::vector<uint8_t> held_;  // by page: the engine holds it resident
  std::vector<uint32_t> touched_;
};

}  // namespace kvsim::paging
