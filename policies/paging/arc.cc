// ARC (Megiddo & Modha, FAST 2003). Reproduces libCacheSim libCacheSim/cache/eviction/ARC.c
// (no parameters): resident lists T1 (seen once recently) and T2 (seen at least twice), ghost
// lists B1 and B2 of page ids (not resident), target p for |T1| starting at 0.
//  - hit in T1: move to T2's head; hit in T2: move to T2's head;
//  - miss in B1: p = min(p + max(|B2| / |B1|, 1), C), the id leaves B1, the page enters T2's
//    head; miss in B2: p = max(p - max(|B1| / |B2|, 1), 0), likewise (sizes before removal,
//    floating-point ratio); the eviction for a ghost hit is REPLACE;
//  - miss elsewhere enters T1's head; its eviction (case IV): if |T1| + |B1| + 1 > C, then if B1
//    is not empty drop B1's oldest id and REPLACE, else evict T1's LRU page without a ghost;
//    otherwise, if |T1| + |B1| + |T2| + |B2| >= 2C and B2 is not empty drop B2's oldest id, then
//    REPLACE;
//  - REPLACE: if (|T1| > 0 and (|T1| > p or (|T1| == p and the request hit B2))) or |T2| == 0,
//    T1's LRU page goes to B1's head, else T2's LRU page goes to B2's head.
// As in libCacheSim the ghost lists are trimmed only when a fault evicts, and p is adapted on a
// ghost hit even when the cache is not full.
// Departs only under step semantics: a pinned LRU page is skipped for the next least recent of
// the same list; if the list holds only pinned pages, the other list's LRU page is evicted
// (into its own ghost list).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

enum : uint8_t { kNone, kT1, kT2, kB1, kB2 };

class ArcPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    requests_ = setup.requests;
    const uint32_t n = requests_->num_pages();
    t1_.Reset(n);
    t2_.Reset(n);
    b1_.Reset(n);
    b2_.Reset(n);
    where_.assign(n, kNone);
    cache_size_ = static_cast<uint64_t>(setup.cache_size);
    p_ = 0;
    prepared_ = -1;
    ghost_hit_ = kNone;
  }
  void OnHit(int64_t, uint32_t page) override {
    if (where_[page] == kT1) {
      t1_.Remove(page);
      t2_.PushFront(page);
      where_[page] = kT2;
    } else {
      t2_.MoveToFront(page);
    }
  }
  void OnInsert(int64_t index, uint32_t page) override {
    Prepare(index);
    if (ghost_hit_ != kNone) {
      t2_.PushFront(page);
      where_[page] = kT2;
    } else {
      t1_.PushFront(page);
      where_[page] = kT1;
    }
  }
  uint32_t Evict(int64_t index, const PinView& pins) override {
    Prepare(index);
    if (ghost_hit_ != kNone) return Replace(ghost_hit_ == kB2, pins);
    if (t1_.size() + b1_.size() + 1 > cache_size_) {
      if (!b1_.empty()) {
        DropOldest(b1_);
        return Replace(false, pins);
      }
      const uint32_t victim = OldestUnpinned(t1_, pins);
      if (victim != t1_.end()) {
        t1_.Remove(victim);
        where_[victim] = kNone;
        return victim;
      }
      return Demote(t2_, b2_, kB2, pins);  // T1 all pinned (step semantics only)
    }
    const uint64_t total = t1_.size() + b1_.size() + t2_.size() + b2_.size();
    if (total >= 2 * cache_size_ && !b2_.empty()) DropOldest(b2_);
    return Replace(false, pins);
  }

 private:
  static constexpr uint32_t kNoVictim = 0xffffffffu;

  // The ghost lookup and p adaptation of request `index`, done once, before any eviction.
  void Prepare(int64_t index) {
    if (prepared_ == index) return;
    prepared_ = index;
    const uint32_t page = requests_->page[static_cast<size_t>(index)];
    ghost_hit_ = kNone;
    if (where_[page] == kB1) {
      const double delta =
          std::max(static_cast<double>(b2_.size()) / static_cast<double>(b1_.size()), 1.0);
      p_ = std::min(p_ + delta, static_cast<double>(cache_size_));
      b1_.Remove(page);
      ghost_hit_ = kB1;
    } else if (where_[page] == kB2) {
      const double delta =
          std::max(static_cast<double>(b1_.size()) / static_cast<double>(b2_.size()), 1.0);
      p_ = std::max(p_ - delta, 0.0);
      b2_.Remove(page);
      ghost_hit_ = kB2;
    } else {
      return;
    }
    where_[page] = kNone;
  }
  uint32_t Replace(bool hit_in_b2, const PinView& pins) {
    const auto t1 = static_cast<double>(t1_.size());
    const bool from_t1 = (t1_.size() > 0 && (t1 > p_ || (t1 == p_ && hit_in_b2))) || t2_.empty();
    if (from_t1) {
      const uint32_t victim = Demote(t1_, b1_, kB1, pins);
      return victim != kNoVictim ? victim : Demote(t2_, b2_, kB2, pins);
    }
    const uint32_t victim = Demote(t2_, b2_, kB2, pins);
    return victim != kNoVictim ? victim : Demote(t1_, b1_, kB1, pins);
  }
  // Moves the least recent unpinned page of `list` to the head of `ghost`; kNoVictim if none.
  uint32_t Demote(PageList& list, PageList& ghost, uint8_t ghost_tag, const PinView& pins) {
    const uint32_t victim = OldestUnpinned(list, pins);
    if (victim == list.end()) return kNoVictim;
    list.Remove(victim);
    ghost.PushFront(victim);
    where_[victim] = ghost_tag;
    return victim;
  }
  void DropOldest(PageList& ghost) {
    const uint32_t oldest = ghost.Back();
    ghost.Remove(oldest);
    where_[oldest] = kNone;
  }

  const DenseRequests* requests_ = nullptr;
  PageList t1_, t2_, b1_, b2_;  // Front = most recent
  std::vector<uint8_t> where_;  // by page: kNone, kT1, kT2, kB1, kB2
  uint64_t cache_size_ = 0;
  double p_ = 0;
  int64_t prepared_ = -1;
  uint8_t ghost_hit_ = kNone;  // where request prepared_ found its page: kNone, kB1 or kB2
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeArcPolicy() { return std::make_unique<ArcPolicy>(); }

}  // namespace kvsim::paging
