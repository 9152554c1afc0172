#pragma once
// An intrusive doubly linked list over dense page ids (arrays indexed by page, no allocation per
// operation): the O(1) recency/insertion order the list-based paging policies share.
#include <cstdint>
#include <vector>

namespace kvsim::paging {

class PageList {
 public:
  // Forgets everything; pages are < num_pages. The sentinel is num_pages.
  void Reset(uint32_t num_pages) {
    sentinel_ = num_pages;
    nodes_.assign(num_pages + 1, {kAbsent, kAbsent});
    nodes_[sentinel_] = {sentinel_, sentinel_};
    size_ = 0;
  }
  bool Contains(uint32_t page) const { return nodes_[page].prev != kAbsent; }
  bool empty() const { return size_ == 0; }
  uint32_t size() const { return size_; }
  uint32_t end() const { return sentinel_; }
  // Most recently pushed, and oldest; end() when empty.
  uint32_t Front() const { return nodes_[sentinel_].next; }
  uint32_t Back() const { return nodes_[sentinel_].prev; }
  // Towards the front (newer) from `page`; end() past the front.
  uint32_t Newer(uint32_t page) const { return nodes_[page].prev; }

  void PushFront(uint32_t page) {
    const uint32_t first = nodes_[sentinel_].next;
    nodes_[page] = {sentinel_, first};
    nodes_[first].prev = page;
    nodes_[sentinel_].next = page;
    ++size_;
  }
  void Remove(uint32_t page) {
    const Node node = nodes_[page];
    nodes_[node.prev].next = node.next;
    nodes_[node.next].prev = node.prev;
    nodes_[page] = {kAbsent, kAbsent};
    --size_;
  }
  void MoveToFront(uint32_t page) {
    Remove(page);
    PushFront(page);
  }

 private:
  static constexpr uint32_t kAbsent = 0xffffffffu;
  // prev and next side by side: one cache line per page touched.
  struct Node {
    uint32_t prev;
    uint32_t next;
  };

  uint32_t sentinel_ = 0;
  uint32_t size_ = 0;
  std::vector<Node> nodes_;
};

// The oldest page of `list` that `pins` (anything with IsPinned(page)) does not pin, walking
// towards the front; list.end() if every page is pinned. O(1) unless pinned pages sit at the back.
template <class Pins>
uint32_t OldestUnpinned(const PageList& list, const Pins& pins) {
  uint32_t page = list.Back();
  while (page != list.end() && pins.IsPinned(page)) page = list.Newer(page);
  return page;
}

}  // namespace kvsim::paging
