// S3-FIFO (Yang et al., SOSP 2023). Reproduces libCacheSim
// libCacheSim/cache/eviction/S3FIFO.c with its defaults
// "fifo-size-ratio=0.10,ghost-size-ratio=0.90,move-to-main-threshold=2":
//  - small FIFO S of floor(0.1 C) pages, main FIFO M of C - |S|, ghost FIFO G of floor(0.9 C)
//    page ids (not resident; G is empty when floor(0.9 C) = 0);
//  - a hit adds 1 to the page's counter (kept capped at 3, which no rule can tell apart);
//  - a miss whose page is in G leaves G and enters M's head, otherwise it enters S's head;
//    both start with counter 0;
//  - to evict: from M if |M| exceeds its size or S is empty, else from S. From S: the tail page
//    moves to M's head with counter 0 if its counter is >= 2, and the walk goes on; the first
//    tail page with counter < 2 is evicted and its id enters G (G drops its oldest id when
//    full). If S empties without an eviction, M evicts. From M: a tail page with counter >= 1
//    is reinserted at M's head with counter min(counter, 3) - 1; the first with counter 0 is
//    evicted (no ghost).
// Departs in: libCacheSim admits nothing while the small queue holds fewer than 2 objects
// (S3FIFO_insert refuses obj_size >= small size), i.e. below C = 20 its S3-FIFO never hits; the
// engine always admits, so here |S| = max(1, floor(0.1 C)) and classic counts equal
// libCacheSim's only for C >= 20. Under step semantics a pinned page is skipped where it
// stands (S: it keeps its place and counter; M: likewise, the walk going on round M); if the
// chosen queue holds only pinned pages, the other queue evicts.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

enum : uint8_t { kNone, kSmall, kMain, kGhost };

class S3FifoPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    requests_ = setup.requests;
    const uint32_t n = requests_->num_pages();
    small_.Reset(n);
    main_.Reset(n);
    ghost_.Reset(n);
    where_.assign(n, kNone);
    freq_.assign(n, 0);
    const auto c = static_cast<uint64_t>(setup.cache_size);
    // (int64_t)(C * 0.1) as libCacheSim computes it, at least 1 (see above).
    small_size_ = std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(c) * 0.1));
    main_size_ = c > small_size_ ? c - small_size_ : 0;
    ghost_size_ = static_cast<uint64_t>(static_cast<double>(c) * 0.9);
    prepared_ = -1;
    ghost_hit_ = false;
  }
  void OnHit(int64_t, uint32_t page) override {
    if (freq_[page] < 3) ++freq_[page];
  }
  void OnInsert(int64_t index, uint32_t page) override {
    Prepare(index);
    if (ghost_hit_) {
      main_.PushFront(page);
      where_[page] = kMain;
    } else {
      small_.PushFront(page);
      where_[page] = kSmall;
    }
    freq_[page] = 0;
  }
  uint32_t Evict(int64_t index, const PinView& pins) override {
    Prepare(index);
    uint32_t victim = kNoVictim;
    if (main_.size() > main_size_ || small_.empty()) {
      victim = EvictMain(pins);
      if (victim == kNoVictim) victim = EvictSmall(pins);
    } else {
      victim = EvictSmall(pins);
      if (victim == kNoVictim) victim = EvictMain(pins);
    }
    return victim;
  }

 private:
  static constexpr uint32_t kNoVictim = 0xffffffffu;

  // The ghost lookup of request `index`, done once, before any eviction can push its id out.
  void Prepare(int64_t index) {
    if (prepared_ == index) return;
    prepared_ = index;
    const uint32_t page = requests_->page[static_cast<size_t>(index)];
    ghost_hit_ = where_[page] == kGhost;
    if (ghost_hit_) {
      ghost_.Remove(page);
      where_[page] = kNone;
    }
  }
  uint32_t EvictSmall(const PinView& pins) {
    uint32_t page = small_.Back();
    while (page != small_.end()) {
      const uint32_t newer = small_.Newer(page);
      if (!pins.IsPinned(page)) {
        small_.Remove(page);
        if (freq_[page] < 2) {
          where_[page] = kNone;
          AddGhost(page);
          return page;
        }
        main_.PushFront(page);
        where_[page] = kMain;
        freq_[page] = 0;
      }
      page = newer;
    }
    return kNoVictim;
  }
  uint32_t EvictMain(const PinView& pins) {
    uint32_t page = main_.Back();
    uint32_t pinned_run = 0;  // consecutive pinned pages passed: a full lap means all pinned
    while (!main_.empty()) {
      if (page == main_.end()) page = main_.Back();
      const uint32_t newer = main_.Newer(page);
      if (pins.IsPinned(page)) {
        if (++pinned_run >= main_.size()) return kNoVictim;
      } else if (freq_[page] >= 1) {
        pinned_run = 0;
        freq_[page] = static_cast<uint8_t>(freq_[page] - 1);
        main_.MoveToFront(page);
      } else {
        main_.Remove(page);
        where_[page] = kNone;
        return page;
      }
      page = newer;
    }
    return kNoVictim;
  }
  void AddGhost(uint32_t page) {
    if (ghost_size_ == 0) return;
    if (ghost_.size() >= ghost_size_) {
      const uint32_t oldest = ghost_.Back();
      ghost_.Remove(oldest);
      where_[oldest] = kNone;
    }
    ghost_.PushFront(page);
    where_[page] = kGhost;
  }

  const DenseRequests* requests_ = nullptr;
  PageList small_, main_, ghost_;  // Front = newest
  std::vector<uint8_t> where_;     // by page: kNone, kSmall, kMain, kGhost
  std::vector<uint8_t> freq_;      // by page, capped at 3
  uint64_t small_size_ = 0, main_size_ = 0, ghost_size_ = 0;
  int64_t prepared_ = -1;
  bool ghost_hit_ = false;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeS3FifoPolicy() { return std::make_unique<S3FifoPolicy>(); }

}  // namespace kvsim::paging
