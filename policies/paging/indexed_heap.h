#pragma once
// A binary heap of dense page ids with per-page keys that can change in place (O(log size) per
// operation, memory O(num_pages)): the priority structure of LFU and Belady. `Above(a, b)` is
// true when key a belongs nearer the top than key b.
#include <cstdint>
#include <utility>
#include <vector>

namespace kvsim::paging {

template <typename Key, typename Above>
class IndexedHeap {
 public:
  void Reset(uint32_t num_pages) {
    heap_.clear();
    pos_.assign(num_pages, kAbsent);
    key_.assign(num_pages, Key{});
  }
  bool empty() const { return heap_.empty(); }
  uint32_t Top() const { return heap_.front(); }
  const Key& KeyOf(uint32_t page) const { return key_[page]; }

  void Push(uint32_t page, Key key) {
    key_[page] = key;
    pos_[page] = static_cast<uint32_t>(heap_.size());
    heap_.push_back(page);
    SiftUp(pos_[page]);
  }
  void Update(uint32_t page, Key key) {
    const bool up = Above()(key, key_[page]);
    key_[page] = key;
    if (up) {
      SiftUp(pos_[page]);
    } else {
      SiftDown(pos_[page]);
    }
  }
  uint32_t Pop() {
    const uint32_t top = heap_.front();
    Remove(top);
    return top;
  }
  void Remove(uint32_t page) {
    const uint32_t at = pos_[page];
    const uint32_t last = heap_.back();
    heap_.pop_back();
    pos_[page] = kAbsent;
    if (last == page) return;
    heap_[at] = last;
    pos_[last] = at;
    SiftUp(at);
    SiftDown(pos_[last]);
  }

 private:
  static constexpr uint32_t kAbsent = 0xffffffffu;

  void Place(uint32_t at, uint32_t page) {
    heap_[at] = page;
    pos_[page] = at;
  }
  void SiftUp(uint32_t at) {
    const uint32_t page = heap_[at];
    while (at > 0) {
      const uint32_t parent = (at - 1) / 2;
      if (!Above()(key_[page], key_[heap_[parent]])) break;
      Place(at, heap_[parent]);
      at = parent;
    }
    Place(at, page);
  }
  void SiftDown(uint32_t at) {
    const uint32_t page = heap_[at];
    const auto n = static_cast<uint32_t>(heap_.size());
    while (true) {
      uint32_t child = 2 * at + 1;
      if (child >= n) break;
      if (child + 1 < n && Above()(key_[heap_[child + 1]], key_[heap_[child]])) ++child;
      if (!Above()(key_[heap_[child]], key_[page])) break;
      Place(at, heap_[child]);
      at = child;
    }
    Place(at, page);
  }

  std::vector<uint32_t> heap_;
  std::vector<uint32_t> pos_;
  std::vector<Key> key_;
};

// Pops pinned pages off `heap` until its top is unpinned, pops and returns that top, and pushes
// the pinned pages back: a policy's best unpinned victim in O(pinned * log size).
template <typename Heap, typename Pins>
uint32_t PopUnpinned(Heap& heap, const Pins& pins, std::vector<uint32_t>& scratch) {
  scratch.clear();
  while (pins.IsPinned(heap.Top())) scratch.push_back(heap.Pop());
  const uint32_t victim = heap.Pop();
  for (uint32_t page : scratch) heap.Push(page, heap.KeyOf(page));
  return victim;
}

}  // namespace kvsim::paging
