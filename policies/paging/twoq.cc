// 2Q (Johnson & Shasha, VLDB 1994), the full version with A1in, A1out and Am. Reproduces
// libCacheSim libCacheSim/cache/eviction/TwoQ.c with its defaults
// "Ain-size-ratio=0.25,Aout-size-ratio=0.5":
//  - A1in: FIFO of resident pages, target floor(0.25 C); Am: LRU of resident pages,
//    C - floor(0.25 C); A1out: FIFO of floor(0.5 C) page ids evicted from A1in (ghosts, not
//    resident; nothing is kept when floor(0.5 C) = 0);
//  - a hit in Am moves the page to Am's head; a hit in A1in changes nothing;
//  - a miss whose page is in A1out leaves A1out and enters Am's head, otherwise it enters
//    A1in's head;
//  - to evict: if A1in holds more than its target, A1in's oldest page is evicted and its id
//    enters A1out (dropping A1out's oldest id when full); otherwise Am's LRU page is evicted.
// (libCacheSim admits a ghost hit with Am->get, which could evict a second page if Am were
// over its target; with a full cache of A1in + Am = C that cannot happen, so one victim per
// fault, as the engine requires, gives the same counts.)
// Departs in: libCacheSim admits nothing while the A1in target is 0 (TwoQ_can_insert: obj_size
// <= A1in size), i.e. below C = 4 its 2Q never hits; the engine always admits (into A1in, which
// is then over its target at once), so classic counts equal libCacheSim's for C >= 4.
// Under step semantics: a pinned candidate is skipped for the next oldest page of
// the same queue; if that queue holds only pinned pages, the other queue evicts (A1in victims
// still enter A1out).
#include <cstdint>
#include <memory>
#include <vector>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

enum : uint8_t { kNone, kIn, kMain, kOut };

class TwoQPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    requests_ = setup.requests;
    const uint32_t n = requests_->num_pages();
    in_.Reset(n);
    main_.Reset(n);
    out_.Reset(n);
    where_.assign(n, kNone);
    const auto c = static_cast<double>(setup.cache_size);
    in_size_ = static_cast<uint64_t>(c * 0.25);
    out_size_ = static_cast<uint64_t>(c * 0.5);
    prepared_ = -1;
    ghost_hit_ = false;
  }
  void OnHit(int64_t, uint32_t page) override {
    if (where_[page] == kMain) main_.MoveToFront(page);
  }
  void OnInsert(int64_t index, uint32_t page) override {
    Prepare(index);
    if (ghost_hit_) {
      main_.PushFront(page);
      where_[page] = kMain;
    } else {
      in_.PushFront(page);
      where_[page] = kIn;
    }
  }
  uint32_t Evict(int64_t index, const PinView& pins) override {
    Prepare(index);
    if (in_.size() > in_size_) {
      const uint32_t victim = OldestUnpinned(in_, pins);
      if (victim != in_.end()) return EvictIn(victim);
    }
    const uint32_t victim = OldestUnpinned(main_, pins);
    if (victim != main_.end()) {
      main_.Remove(victim);
      where_[victim] = kNone;
      return victim;
    }
    return EvictIn(OldestUnpinned(in_, pins));
  }

 private:
  // The A1out lookup of request `index`, done once, before an eviction can push its id out.
  void Prepare(int64_t index) {
    if (prepared_ == index) return;
    prepared_ = index;
    const uint32_t page = requests_->page[static_cast<size_t>(index)];
    ghost_hit_ = where_[page] == kOut;
    if (ghost_hit_) {
      out_.Remove(page);
      where_[page] = kNone;
    }
  }
  uint32_t EvictIn(uint32_t page) {
    in_.Remove(page);
    where_[page] = kNone;
    if (out_size_ == 0) return page;
    if (out_.size() >= out_size_) {
      const uint32_t oldest = out_.Back();
      out_.Remove(oldest);
      where_[oldest] = kNone;
    }
    out_.PushFront(page);
    where_[page] = kOut;
    return page;
  }

  const DenseRequests* requests_ = nullptr;
  PageList in_, main_, out_;    // Front = newest / most recent
  std::vector<uint8_t> where_;  // by page: kNone, kIn, kMain, kOut
  uint64_t in_size_ = 0, out_size_ = 0;
  int64_t prepared_ = -1;
  bool ghost_hit_ = false;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeTwoQPolicy() { return std::make_unique<TwoQPolicy>(); }

}  // namespace kvsim::paging
