// LIRS (Jiang & Zhang, SIGMETRICS 2002), as libCacheSim libCacheSim/cache/eviction/LIRS.c
// implements it (LIRS_init, LIRS_find, LIRS_can_insert, LIRS_insert, LIRS_evict, evictLIR,
// evictHIR, LIRS_prune, limitStack), with its defaults, objects of size 1:
//  - hirs_limit = max(1, floor(0.01 C)) resident HIR blocks (stack Q, an LRU list),
//    lirs_limit = C - hirs_limit LIR blocks; stack S (an LRU list) holds LIR blocks and resident
//    and non-resident HIR blocks, NH a FIFO of the non-resident HIR blocks of S;
//  - every request first moves the block to the top of S and of Q where it is in them;
//  - LIR block in S: hit, then prune S (drop HIR blocks from the bottom until an LIR block, never
//    the top block; a non-resident one leaves NH too);
//  - resident HIR block in S: hit; it leaves Q, the bottom LIR blocks are demoted (evictLIR)
//    while the LIR set is full, and it becomes LIR;
//  - resident HIR block only in Q: hit; LIR blocks are demoted while the LIR set is full, and it
//    enters the top of S as a resident HIR block;
//  - non-resident HIR block in S: miss; LIR blocks are demoted while the LIR set is full, it
//    leaves NH and becomes a resident LIR block;
//  - any other block: miss; it becomes LIR while the LIR set has room, else (evicting Q's bottom
//    while Q is full) a resident HIR block on top of S and Q;
//  - demoting (evictLIR) removes S's bottom block, evicts Q's bottom blocks while Q is full, puts
//    the demoted block on top of Q and prunes S; evicting from Q (evictHIR) makes the block
//    non-resident in S (and enters it into NH) if S holds it;
//  - after every request, while S holds more than 2 C blocks, NH's oldest block leaves NH and S.
// Hits are exactly libCacheSim's, including what its bookkeeping implies: with hirs_limit = 1
// (C < 200) a hit on a block only in Q demotes an LIR block into Q, which evicts that very
// block from Q; the block still enters S as a resident HIR block but no longer counts in the
// occupancy, so libCacheSim's LIRS can hold more than C blocks (sim/paging/README.md). It is
// self-managed (engine.h): it reports every block that stops being a hit, whenever that
// happens. Like libCacheSim it admits nothing at C = 1 (lirs_limit = 0).
#include <cstdint>
#include <memory>
#include <vector>

#include "common/error.h"
#include "policies/paging/drop_tracker.h"
#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

class LirsPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    const uint32_t n = setup.requests->num_pages();
    s_.Reset(n);
    q_.Reset(n);
    nh_.Reset(n);
    lir_.assign(n, 0);
    res_.assign(n, 0);
    drops_.Reset(n);
    cache_size_ = static_cast<uint64_t>(setup.cache_size);
    // LIRS_init: MAX(1, (uint64_t)(hirs_ratio * cache_size)) with hirs_ratio = 0.01.
    hirs_limit_ = static_cast<uint64_t>(0.01 * static_cast<double>(cache_size_));
    if (hirs_limit_ < 1) hirs_limit_ = 1;
    lirs_limit_ = cache_size_ >= hirs_limit_ ? cache_size_ - hirs_limit_ : 0;
    lirs_ = hirs_ = 0;
  }
  void OnHit(int64_t, uint32_t) override { Unused(); }
  void OnInsert(int64_t, uint32_t) override { Unused(); }
  uint32_t Evict(int64_t, const PinView&) override { return Unused(); }
  bool ManagesResidency() const override { return true; }

  bool Access(int64_t, uint32_t p, std::vector<uint32_t>& dropped) override {
    const bool hit = Find(p);
    if (!hit) Miss(p);
    LimitStack();
    drops_.Report([this](uint32_t page) { return Holds(page); }, dropped);
    return hit;
  }

 private:
  static uint32_t Unused() {
    throw InternalError("lirs manages its own residency: the engine calls Access() only");
  }
  // LIRS_find: what a request finds resident.
  bool Holds(uint32_t p) const {
    if (s_.Contains(p)) return lir_[p] != 0 || res_[p] != 0;
    return q_.Contains(p);
  }

  // LIRS_find with update_cache = true.
  bool Find(uint32_t p) {
    const bool in_s = s_.Contains(p);
    const bool in_q = q_.Contains(p);
    if (in_s) s_.MoveToFront(p);
    if (in_q) q_.MoveToFront(p);
    if (in_s) {
      if (lir_[p] != 0) {
        Prune();
        return true;
      }
      if (res_[p] == 0) return false;
      // hit_RD_HIRinS
      if (in_q) {
        --hirs_;
        q_.Remove(p);
        drops_.Touch(p);
      }
      while (lirs_ + 1 > lirs_limit_) EvictLir();
      lir_[p] = 1;
      ++lirs_;
      return true;
    }
    if (!in_q) return false;
    // hit_RD_HIRinQ: Q keeps the block (unless demoting evicts it from Q).
    while (lirs_ + 1 > lirs_limit_) EvictLir();
    s_.PushFront(p);
    lir_[p] = 0;
    res_[p] = 1;
    return true;
  }

  // cache_get_base after a miss: LIRS_can_insert, the LIRS_evict loop, LIRS_insert.
  void Miss(uint32_t p) {
    drops_.Admit(p);
    if (s_.Contains(p)) {
      // A non-resident HIR block in S (a resident one or an LIR block would have hit).
      while (lirs_ + 1 > lirs_limit_) EvictLir();
      if (nh_.Contains(p)) nh_.Remove(p);
    } else {
      if (1 > lirs_limit_ || 1 > hirs_limit_) return;  // "object size too large": not admitted
      if (lirs_ + 1 > lirs_limit_ && hirs_ + 1 > hirs_limit_) {
        while (hirs_ + 1 > hirs_limit_) EvictHir();
      }
    }
    // cache_get_base: while (occupied + size > cache_size) LIRS_evict; occupied = lirs + hirs.
    while (lirs_ + hirs_ + 1 > cache_size_) {
      const uint64_t before = lirs_ + hirs_;
      EvictForInsert(p);
      KVSIM_ASSERT(lirs_ + hirs_ < before, "lirs: LIRS_evict made no room");
    }
    // LIRS_insert (the state is looked up again, as libCacheSim does).
    if (s_.Contains(p) && lir_[p] == 0 && res_[p] == 0) {
      lir_[p] = 1;
      res_[p] = 1;
      ++lirs_;
    } else if (!s_.Contains(p) && !q_.Contains(p)) {
      s_.PushFront(p);
      res_[p] = 1;
      if (lirs_ + 1 <= lirs_limit_) {
        lir_[p] = 1;
        ++lirs_;
      } else {
        lir_[p] = 0;
        q_.PushFront(p);
        ++hirs_;
      }
    }
  }

  // LIRS_evict (only when lirs + hirs is at C when a miss is inserted).
  void EvictForInsert(uint32_t p) {
    const bool in_s = s_.Contains(p);
    if (in_s && lir_[p] == 0 && res_[p] == 0) {
      while (hirs_ >= hirs_limit_) EvictHir();
      EvictLir();
    }
    if (!in_s && !q_.Contains(p) && lirs_ + 1 > lirs_limit_ && hirs_ + 1 > hirs_limit_) {
      EvictHir();
    }
  }

  // evictLIR: demote S's bottom block into Q.
  void EvictLir() {
    KVSIM_ASSERT(!s_.empty(), "lirs: demoting from an empty stack S");
    const uint32_t v = s_.Back();
    // Normally an LIR block (S is pruned); at C = 2 it can be a resident HIR block only in S
    // (after a hit on a block only in Q: file comment), demoted all the same, lirs_count
    // decremented all the same (libCacheSim's uint64_t, wrapping as there).
    KVSIM_ASSERT(!q_.Contains(v), "lirs: S's bottom block {} is in Q too", v);
    --lirs_;
    s_.Remove(v);
    drops_.Touch(v);
    while (hirs_ + 1 > hirs_limit_) EvictHir();
    q_.PushFront(v);
    ++hirs_;
    Prune();
  }

  // evictHIR: evict Q's bottom block.
  void EvictHir() {
    KVSIM_ASSERT(!q_.empty(), "lirs: evicting from an empty stack Q");
    const uint32_t v = q_.Back();
    --hirs_;
    q_.Remove(v);
    drops_.Touch(v);
    if (s_.Contains(v)) {
      res_[v] = 0;
      KVSIM_ASSERT(!nh_.Contains(v), "lirs: block {} is already non-resident", v);
      nh_.PushFront(v);
    }
  }

  // LIRS_prune: drop HIR blocks from S's bottom, never its top block.
  void Prune() {
    while (s_.Back() != s_.Front()) {
      const uint32_t v = s_.Back();
      if (lir_[v] != 0) break;
      if (res_[v] == 0 && nh_.Contains(v)) nh_.Remove(v);
      s_.Remove(v);
      drops_.Touch(v);
    }
  }

  // limitStack: S holds at most 2 C blocks, dropping the oldest non-resident ones.
  void LimitStack() {
    while (s_.size() > 2 * cache_size_ && !nh_.empty()) {
      const uint32_t v = nh_.Back();
      nh_.Remove(v);
      if (s_.Contains(v)) s_.Remove(v);
    }
  }

  PageList s_, q_, nh_;             // Front = top / newest
  std::vector<uint8_t> lir_, res_;  // by page, for blocks of S: LIR, resident
  DropTracker drops_;
  uint64_t cache_size_ = 0, hirs_limit_ = 1, lirs_limit_ = 0;
  uint64_t lirs_ = 0, hirs_ = 0;  // lirs_count, hirs_count
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeLirsPolicy() { return std::make_unique<LirsPolicy>(); }

}  // namespace kvsim::paging
