// LeCaR (Vietri et al., HotStorage 2018): regret minimisation over two experts, LRU and LFU.
// Reproduces libCacheSim libCacheSim/cache/eviction/LeCaR.c with its defaults
// ("update-weight=1,lru-weight=0.5"): weights w_lru = w_lfu = 0.5, learning rate 0.45, discount
// rate 0.005^(1/C).
//  - resident pages sit in an LRU list and in LFU buckets by request count (a page enters its
//    bucket at the back; the LFU candidate is the front of the lowest bucket, i.e. the page
//    longest at the lowest count); a hit moves the page to the LRU head and up one bucket;
//  - a fault evicts the LRU candidate if both experts name the same page; otherwise it draws
//    r = (draw % 100) / 100 and evicts the LRU candidate if r < w_lru, else the LFU candidate;
//  - the victim is remembered in the ghost list of the expert that chose it (each at most
//    floor(C / 2) ids, oldest dropped), or, when both chose it, as a ghost of neither; a fault on
//    a ghost of expert E, t requests after its eviction, sets w_E = w_E * exp(-0.45 * dr^t) +
//    1e-10, then renormalises both (w_other + 1e-10) with s = w_E + w_other + 2e-10.
// Departs in: the draws come from mt19937_64(setup.seed), not libCacheSim's next_rand() (an MMIX
// LCG that cachesim seeds from time(NULL), so its own LeCaR counts vary from run to run): fault
// counts equal libCacheSim's in distribution only. Under
// step semantics a pinned candidate is passed over: the LRU expert names the least recent
// unpinned page, the LFU expert the first unpinned page of the lowest bucket holding one.
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "policies/paging/page_list.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

enum : uint8_t { kNone, kResident, kGhostLru, kGhostLfu, kGhostBoth };

class LeCarPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    requests_ = setup.requests;
    const uint32_t n = requests_->num_pages();
    lru_.Reset(n);
    ghost_lru_.Reset(n);
    ghost_lfu_.Reset(n);
    state_.assign(n, kNone);
    freq_.assign(n, 0);
    evicted_at_.assign(n, 0);
    bucket_prev_.assign(n, kNil);
    bucket_next_.assign(n, kNil);
    buckets_.assign(2, Bucket{});
    min_freq_ = 1;
    w_lru_ = w_lfu_ = 0.5;
    const double c = setup.cache_size > 0 ? static_cast<double>(setup.cache_size) : 1.0;
    discount_ = std::pow(0.005, 1.0 / c);
    ghost_capacity_ = static_cast<uint64_t>(setup.cache_size) / 2;
    rng_.seed(setup.seed);
    prepared_ = -1;
  }
  void OnHit(int64_t, uint32_t page) override {
    lru_.MoveToFront(page);
    const uint32_t f = freq_[page];
    BucketRemove(page);
    freq_[page] = f + 1;
    BucketAppend(page);
    if (f == min_freq_ && buckets_[f].first == kNil) min_freq_ = f + 1;
  }
  void OnInsert(int64_t index, uint32_t page) override {
    Prepare(index);
    lru_.PushFront(page);
    state_[page] = kResident;
    freq_[page] = 1;
    BucketAppend(page);
    min_freq_ = 1;
  }
  uint32_t Evict(int64_t index, const PinView& pins) override {
    Prepare(index);
    const uint32_t lru_choice = OldestUnpinned(lru_, pins);
    const uint32_t lfu_choice = FirstUnpinnedLfu(pins);
    uint32_t victim = lru_choice;
    uint8_t ghost = kGhostBoth;
    if (lru_choice != lfu_choice) {
      const double r = static_cast<double>(rng_() % 100) / 100.0;
      if (r < w_lru_) {
        ghost = kGhostLru;
      } else {
        victim = lfu_choice;
        ghost = kGhostLfu;
      }
    }
    lru_.Remove(victim);
    BucketRemove(victim);
    if (buckets_[min_freq_].first == kNil && !lru_.empty()) {
      while (buckets_[min_freq_].first == kNil) ++min_freq_;
    }
    evicted_at_[victim] = index + 1;  // libCacheSim's n_req: requests so far, this one included
    state_[victim] = ghost;
    if (ghost == kGhostLru) AddGhost(ghost_lru_, victim);
    if (ghost == kGhostLfu) AddGhost(ghost_lfu_, victim);
    return victim;
  }

 private:
  static constexpr uint32_t kNil = 0xffffffffu;
  struct Bucket {
    uint32_t first = kNil;
    uint32_t last = kNil;
  };

  // The ghost lookup and weight update of request `index`, done once, before any eviction.
  void Prepare(int64_t index) {
    if (prepared_ == index) return;
    prepared_ = index;
    const uint32_t page = requests_->page[static_cast<size_t>(index)];
    const int64_t age = index + 1 - evicted_at_[page];
    switch (state_[page]) {
      case kGhostLru:
        UpdateWeights(age, w_lru_, w_lfu_);
        ghost_lru_.Remove(page);
        break;
      case kGhostLfu:
        UpdateWeights(age, w_lfu_, w_lru_);
        ghost_lfu_.Remove(page);
        break;
      default:
        break;
    }
    if (state_[page] != kResident) state_[page] = kNone;
  }
  void UpdateWeights(int64_t age, double& hit, double& other) const {
    const double r = std::pow(discount_, static_cast<double>(age));
    hit = hit * std::exp(-0.45 * r) + 1e-10;
    const double s = hit + other + 2e-10;
    hit /= s;
    other = (other + 1e-10) / s;
  }
  void AddGhost(PageList& list, uint32_t page) {
    list.PushFront(page);
    while (list.size() > ghost_capacity_) {
      const uint32_t oldest = list.Back();
      list.Remove(oldest);
      state_[oldest] = kNone;
    }
  }
  uint32_t FirstUnpinnedLfu(const PinView& pins) const {
    for (size_t f = min_freq_; f < buckets_.size(); ++f) {
      for (uint32_t p = buckets_[f].first; p != kNil; p = bucket_next_[p]) {
        if (!pins.IsPinned(p)) return p;
      }
    }
    return kNil;  // unreachable: the engine guarantees an unpinned resident page
  }
  void BucketAppend(uint32_t page) {
    const uint32_t f = freq_[page];
    if (f >= buckets_.size()) buckets_.resize(f + 1);
    Bucket& b = buckets_[f];
    bucket_prev_[page] = b.last;
    bucket_next_[page] = kNil;
    if (b.last != kNil) {
      bucket_next_[b.last] = page;
    } else {
      b.first = page;
    }
    b.last = page;
  }
  void BucketRemove(uint32_t page) {
    Bucket& b = buckets_[freq_[page]];
    const uint32_t prev = bucket_prev_[page];
    const uint32_t next = bucket_next_[page];
    if (prev != kNil) {
      bucket_next_[prev] = next;
    } else {
      b.first = next;
    }
    if (next != kNil) {
      bucket_prev_[next] = prev;
    } else {
      b.last = prev;
    }
  }

  const DenseRequests* requests_ = nullptr;
  PageList lru_;                    // resident, Front = most recent
  PageList ghost_lru_, ghost_lfu_;  // Front = newest ghost
  std::vector<uint8_t> state_;
  std::vector<uint32_t> freq_;
  std::vector<int64_t> evicted_at_;
  std::vector<uint32_t> bucket_prev_, bucket_next_;
  std::vector<Bucket> buckets_;  // by request count
  uint32_t min_freq_ = 1;
  double w_lru_ = 0.5, w_lfu_ = 0.5;
  double discount_ = 0;
  uint64_t ghost_capacity_ = 0;
  std::mt19937_64 rng_;
  int64_t prepared_ = -1;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeLeCarPolicy() { return std::make_unique<LeCarPolicy>(); }

}  // namespace kvsim::paging
