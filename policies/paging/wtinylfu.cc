// W-TinyLFU (Einziger, Friedman & Manes, ACM ToS 2017), as libCacheSim
// libCacheSim/cache/eviction/WTinyLFU.c implements it with its defaults
// "main-cache=SLRU,window-size=0.01" (WTinyLFU_init, WTinyLFU_find, WTinyLFU_insert,
// WTinyLFU_evict), the main cache libCacheSim/cache/eviction/SLRU.c with "seg-size=1:4"
// (SLRU_find, SLRU_insert, SLRU_evict, SLRU_cool, SLRU_promote_to_next_seg) and the frequency
// sketch libCacheSim/dataStructure/minimalIncrementCBF.c, objects of size 1:
//  - a window LRU of W = floor(0.01 C) objects' worth and an SLRU main cache of M = C - W with
//    two LRU segments of floor(0.2 M) (probation) and floor(0.8 M) (protected), which can sum
//    to less than M;
//  - a request finds the object in the window (moved to its head) or the main cache: a hit in
//    protected moves it to protected's head, a hit in probation promotes it to protected's head,
//    and while protected is over its size its tail is cooled to probation's head, and while
//    probation is over its size its tail is evicted (an eviction on a hit); every main-cache
//    hit adds the object to the sketch, and after each 32 M of them every counter is halved;
//  - a miss goes to the window's head (and is added to the sketch) after, while window + main
//    hold C objects: take the window's tail; if main has room, it moves there (probation, or
//    protected when probation is full and protected is not, or over-full probation); otherwise
//    it replaces main's victim (probation's tail, else protected's) if the sketch estimates it
//    strictly more frequent, else it is evicted and the loop ends; each window victim is added
//    to the sketch; with the window empty, main's victim is evicted and the loop ends. One miss
//    can so evict several objects, or none;
//  - sketch: a counting Bloom filter of ceil(bpe M) 32-bit counters, bpe = -ln(0.001) / ln(2)^2,
//    10 hashes x_i = (a + i b) mod counters in 32-bit arithmetic, a and b the low 32 bits of
//    XXH64 of the 8 little-endian bytes of the object id with seeds 0x12345678 and 0x12344321;
//    an add increments all 10 counters (not only the minimal ones, as the file's name would
//    suggest), an estimate is their minimum.
// The object id hashed is the page id of the request sequence (the oracleGeneral obj_id).
// Departs in: libCacheSim admits nothing while W = 0 (WTinyLFU_can_insert: size <= W), i.e.
// below C = 100 its W-TinyLFU never hits, and nothing while probation's size is 0 (M < 5); here
// the window is max(1, floor(0.01 C)), every miss is admitted, and at C = 1 (M = 0) the window
// victim is evicted; counts equal libCacheSim's from C = 100 on. Self-managed (engine.h): it
// reports every object that leaves, whenever that happens.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "common/error.h"
#include "policies/paging/drop_tracker.h"
#include "policies/paging/page_list.h"
#include "policies/paging/xxh64.h"
#include "sim/paging/engine.h"

namespace kvsim::paging {
namespace {

// minimalIncrementCBF with error 0.001.
class CountingBloomFilter {
 public:
  void Reset(int entries) {
    const double bpe = -std::log(0.001) / 0.480453013918201;
    hashes_ = static_cast<uint32_t>(std::ceil(0.693147180559945 * bpe));
    auto counters =
        static_cast<int64_t>(std::fmin(std::ceil(bpe * entries), std::numeric_limits<int>::max()));
    if (counters < hashes_) counters = 2 * int64_t{hashes_};
    counters_.assign(static_cast<size_t>(counters), 0);
  }
  uint32_t Estimate(uint64_t id) const {
    uint32_t a = 0, b = 0;
    Hash(id, a, b);
    uint32_t min = std::numeric_limits<uint32_t>::max();
    for (uint32_t i = 0; i < hashes_; ++i) {
      const uint32_t c = counters_[Slot(a, b, i)];
      if (c < min) min = c;
    }
    return min;
  }
  void Add(uint64_t id) {
    uint32_t a = 0, b = 0;
    Hash(id, a, b);
    for (uint32_t i = 0; i < hashes_; ++i) ++counters_[Slot(a, b, i)];
  }
  void Decay() {
    for (uint32_t& c : counters_) c >>= 1;
  }

 private:
  static void Hash(uint64_t id, uint32_t& a, uint32_t& b) {
    a = static_cast<uint32_t>(Xxh64OfUint64(id, 0x12345678));
    b = static_cast<uint32_t>(Xxh64OfUint64(id, 0x12344321));
  }
  size_t Slot(uint32_t a, uint32_t b, uint32_t i) const {
    return (a + i * b) % static_cast<uint32_t>(counters_.size());
  }

  uint32_t hashes_ = 0;
  std::vector<uint32_t> counters_;
};

constexpr uint8_t kNotInMain = 0xff;

class WTinyLfuPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    requests_ = setup.requests;
    const uint32_t n = requests_->num_pages();
    window_.Reset(n);
    for (PageList& seg : seg_) seg.Reset(n);
    seg_of_.assign(n, kNotInMain);
    drops_.Reset(n);
    cache_size_ = setup.cache_size;
    // WTinyLFU_init: cache_size *= window_size (0.01), truncated; here at least 1 (departure).
    const auto window = static_cast<int64_t>(static_cast<double>(cache_size_) * 0.01);
    main_size_ = cache_size_ - (window < 1 ? 1 : window);
    if (main_size_ < 0) main_size_ = 0;
    // SLRU_parse_params "seg-size=1:4": (int64_t)((double)part / sum * cache_size).
    seg_max_[0] = static_cast<int64_t>(1.0 / 5.0 * static_cast<double>(main_size_));
    seg_max_[1] = static_cast<int64_t>(4.0 / 5.0 * static_cast<double>(main_size_));
    seg_count_[0] = seg_count_[1] = 0;
    sketch_.Reset(static_cast<int>(main_size_));
    sample_size_ = 32 * main_size_;
    main_hits_ = 0;
  }
  void OnHit(int64_t, uint32_t) override { Unused(); }
  void OnInsert(int64_t, uint32_t) override { Unused(); }
  uint32_t Evict(int64_t, const PinView&) override { return Unused(); }
  bool ManagesResidency() const override { return true; }

  bool Access(int64_t, uint32_t p, std::vector<uint32_t>& dropped) override {
    // WTinyLFU_find with update_cache = true.
    const bool in_window = window_.Contains(p);
    const bool in_main = seg_of_[p] != kNotInMain;
    if (in_window) window_.MoveToFront(p);
    if (in_main) {
      SlruHit(p);
      sketch_.Add(Id(p));
      if (++main_hits_ >= sample_size_) {
        main_hits_ = 0;
        sketch_.Decay();
      }
    }
    const bool hit = in_window || in_main;
    if (!hit) {
      // cache_get_base: evict while occupied + 1 > C, then WTinyLFU_insert.
      drops_.Admit(p);
      while (static_cast<int64_t>(window_.size()) + MainSize() + 1 > cache_size_) Evict();
      window_.PushFront(p);
      sketch_.Add(Id(p));
    }
    drops_.Report(
        [this](uint32_t page) { return window_.Contains(page) || seg_of_[page] != kNotInMain; },
        dropped);
    return hit;
  }

 private:
  static uint32_t Unused() {
    throw InternalError("wtinylfu manages its own residency: the engine calls Access() only");
  }
  uint64_t Id(uint32_t page) const { return requests_->original_id[page]; }
  int64_t MainSize() const { return seg_count_[0] + seg_count_[1]; }

  // WTinyLFU_evict: ends after one object left the cache.
  void Evict() {
    while (!window_.empty()) {
      const uint32_t w = window_.Back();
      if (MainSize() + 1 <= main_size_) {
        SlruInsert(w);
        window_.Remove(w);
      } else if (MainSize() > 0 && sketch_.Estimate(Id(w)) > sketch_.Estimate(Id(SlruVictim()))) {
        SlruEvict();
        window_.Remove(w);
        SlruInsert(w);
      } else {
        window_.Remove(w);
        drops_.Touch(w);
        sketch_.Add(Id(w));
        return;
      }
      sketch_.Add(Id(w));
    }
    SlruEvict();
  }

  // SLRU_to_evict: the first non-empty segment's tail.
  uint32_t SlruVictim() const { return seg_count_[0] > 0 ? seg_[0].Back() : seg_[1].Back(); }
  void SlruEvict() {
    KVSIM_ASSERT(MainSize() > 0, "wtinylfu: evicting from an empty main cache");
    const uint32_t v = SlruVictim();
    const uint8_t s = seg_of_[v];
    seg_[s].Remove(v);
    --seg_count_[s];
    seg_of_[v] = kNotInMain;
    drops_.Touch(v);
  }
  void PushTo(uint8_t s, uint32_t v) {
    seg_[s].PushFront(v);
    seg_of_[v] = s;
    ++seg_count_[s];
  }
  // SLRU_insert.
  void SlruInsert(uint32_t v) {
    uint8_t s = 0;
    if (seg_count_[0] + 1 <= seg_max_[0]) {
      s = 0;
    } else if (seg_count_[1] + 1 <= seg_max_[1]) {
      s = 1;
    } else {
      while (MainSize() + 1 > main_size_) SlruEvict();
    }
    PushTo(s, v);
  }
  // SLRU_find with update_cache = true.
  void SlruHit(uint32_t p) {
    if (seg_of_[p] == 1) {
      seg_[1].MoveToFront(p);
      return;
    }
    seg_[0].Remove(p);
    --seg_count_[0];
    PushTo(1, p);
    while (seg_of_[p] != kNotInMain && seg_count_[seg_of_[p]] > seg_max_[seg_of_[p]]) {
      Cool(seg_of_[p]);
    }
  }
  // SLRU_cool.
  void Cool(uint8_t s) {
    if (s == 0) {
      SlruEvict();
      return;
    }
    const uint32_t v = seg_[1].Back();
    seg_[1].Remove(v);
    --seg_count_[1];
    PushTo(0, v);
    while (seg_count_[0] > seg_max_[0]) Cool(0);
  }

  const DenseRequests* requests_ = nullptr;
  PageList window_;              // Front = most recent
  PageList seg_[2];              // probation, protected; Front = most recent
  std::vector<uint8_t> seg_of_;  // by page: 0, 1 or kNotInMain
  int64_t seg_count_[2] = {0, 0};
  int64_t seg_max_[2] = {0, 0};
  int64_t cache_size_ = 0, main_size_ = 0;
  int64_t sample_size_ = 0, main_hits_ = 0;
  CountingBloomFilter sketch_;
  DropTracker drops_;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeWTinyLfuPolicy() { return std::make_unique<WTinyLfuPolicy>(); }

}  // namespace kvsim::paging
