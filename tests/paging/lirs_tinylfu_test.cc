// libCacheSim's LIRS and W-TinyLFU (policies/paging/lirs.cc, wtinylfu.cc), the self-managed
// policies: hand-worked sequences with the expected faults and evictions, and reference
// re-implementations written here over std::list (O(k) scans, libCacheSim's own bookkeeping:
// occupancy counters, not list sizes) compared request by request, hits and dropped pages, on
// random Zipf-like sequences over many cache sizes; the step-semantics rule of the engine for
// self-managed policies (engine.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <list>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "policies/paging/xxh64.h"
#include "sim/paging/experiment.h"
#include "sim/paging/registry.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

using Pages = std::vector<uint64_t>;
using testing::ZipfRequests;

struct Replayed {
  int64_t faults = 0;
  std::vector<std::pair<int64_t, uint64_t>> evictions;  // (request index, original page id)
};

ReplayOptions Options(int64_t k, Mode mode = Mode::kOffload) {
  ReplayOptions options;
  options.cache_size = k;
  options.mode = mode;
  return options;
}

Replayed ReplayClassic(const Pages& requests, const std::string& name, int64_t k) {
  const DenseRequests dense = OneRequestPerStep(Densify(testing::SequenceOf(requests)));
  auto policy = MakePagingPolicy(CanonicalPagingPolicyName(name));
  std::vector<EvictionEvent> events;
  const ReplayResult r = Replay(dense, *policy, Options(k), &events);
  EXPECT_EQ(r.bypasses, 0);
  Replayed run{r.faults, {}};
  for (const EvictionEvent& e : events)
    run.evictions.push_back({e.index, dense.original_id[e.page]});
  return run;
}

template <class T>
bool Has(const std::list<T>& l, uint64_t id) {
  return std::find(l.begin(), l.end(), id) != l.end();
}

// ---- LIRS: libCacheSim's LIRS.c over three std::lists (front = top / newest) ----
class RefLirs {
 public:
  explicit RefLirs(int64_t c) : c_(static_cast<uint64_t>(c)) {
    hl_ = std::max<uint64_t>(1, static_cast<uint64_t>(0.01 * static_cast<double>(c)));
    ll_ = c_ - hl_;
  }
  // LIRS_get: true on a hit.
  bool Get(uint64_t x) {
    bool hit = false;
    auto s = FindS(x);
    const bool in_q = Has(q_, x);
    if (s != s_.end()) s_.splice(s_.begin(), s_, s);
    if (in_q) MoveFront(q_, x);
    if (s != s_.end()) {
      if (s_.front().lir) {
        Prune();
        hit = true;
      } else if (s_.front().res) {
        if (in_q) {
          q_.remove(x);
          --hirs_;
          --occupied_;
        }
        while (lirs_ + 1 > ll_) EvictLir();
        FindS(x)->lir = true;
        ++lirs_;
        ++occupied_;
        hit = true;
      }
    } else if (in_q) {
      while (lirs_ + 1 > ll_) EvictLir();
      s_.push_front({x, false, true});
      hit = true;
    }
    if (!hit && CanInsert(x)) {
      if (occupied_ + 1 > c_) ADD_FAILURE() << "LIRS_evict is never needed";
      auto e = FindS(x);
      if (e != s_.end() && !e->lir && !e->res) {
        e->lir = e->res = true;
        ++lirs_;
      } else if (lirs_ + 1 <= ll_) {
        s_.push_front({x, true, true});
        ++lirs_;
      } else {
        s_.push_front({x, false, true});
        q_.push_front(x);
        ++hirs_;
      }
      ++occupied_;
    }
    while (s_.size() > 2 * c_ && !nh_.empty()) {
      const uint64_t v = nh_.back();
      nh_.pop_back();
      if (FindS(v) != s_.end()) s_.erase(FindS(v));
    }
    return hit;
  }
  std::set<uint64_t> Resident() {
    std::set<uint64_t> out;
    for (const Entry& e : s_) {
      if (e.lir || e.res) out.insert(e.id);
    }
    for (const uint64_t id : q_) {
      if (FindS(id) == s_.end()) out.insert(id);
    }
    return out;
  }

 private:
  struct Entry {
    uint64_t id;
    bool lir;
    bool res;
  };
  std::list<Entry>::iterator FindS(uint64_t x) {
    return std::find_if(s_.begin(), s_.end(), [&](const Entry& e) { return e.id == x; });
  }
  static void MoveFront(std::list<uint64_t>& l, uint64_t x) {
    l.remove(x);
    l.push_front(x);
  }
  bool CanInsert(uint64_t x) {
    auto s = FindS(x);
    if (s != s_.end()) {
      while (lirs_ + 1 > ll_) EvictLir();
      nh_.remove(x);
      return true;
    }
    if (1 > ll_ || 1 > hl_) return false;
    if (lirs_ + 1 > ll_ && hirs_ + 1 > hl_) {
      while (hirs_ + 1 > hl_) EvictHir();
    }
    return true;
  }
  void EvictLir() {
    const Entry v = s_.back();
    s_.pop_back();
    --lirs_;
    --occupied_;
    while (hirs_ + 1 > hl_) EvictHir();
    q_.push_front(v.id);
    ++hirs_;
    ++occupied_;
    Prune();
  }
  void EvictHir() {
    const uint64_t v = q_.back();
    q_.pop_back();
    --hirs_;
    --occupied_;
    auto s = FindS(v);
    if (s != s_.end()) {
      s->res = false;
      nh_.push_front(v);
    }
  }
  void Prune() {
    while (s_.size() > 1 && !s_.back().lir) {
      if (!s_.back().res) nh_.remove(s_.back().id);
      s_.pop_back();
    }
  }

  uint64_t c_, hl_ = 1, ll_ = 0;
  uint64_t lirs_ = 0, hirs_ = 0, occupied_ = 0;
  std::list<Entry> s_;
  std::list<uint64_t> q_, nh_;
};

// ---- W-TinyLFU: libCacheSim's WTinyLFU.c + SLRU.c (1:4) + minimalIncrementCBF.c ----
class RefWTinyLfu {
 public:
  explicit RefWTinyLfu(int64_t c) : c_(c) {
    const auto w = static_cast<int64_t>(static_cast<double>(c) * 0.01);
    m_ = c - std::max<int64_t>(1, w);  // kvsim's window: at least 1 (equal for C >= 100)
    max_[0] = static_cast<int64_t>(1.0 / 5 * static_cast<double>(m_));
    max_[1] = static_cast<int64_t>(4.0 / 5 * static_cast<double>(m_));
    const double bpe = -std::log(0.001) / 0.480453013918201;
    hashes_ = static_cast<int>(std::ceil(0.693147180559945 * bpe));
    int n = static_cast<int>(std::fmin(std::ceil(bpe * static_cast<double>(m_)), 2147483647.0));
    if (n < hashes_) n = hashes_ * 2;
    bf_.assign(static_cast<size_t>(n), 0);
  }
  bool Get(uint64_t x) {
    const bool in_w = Has(window_, x);
    const int seg = SegOf(x);
    if (in_w) {
      window_.remove(x);
      window_.push_front(x);
    }
    if (seg >= 0) {
      if (seg == 1) {
        seg_[1].remove(x);
        seg_[1].push_front(x);
      } else {
        seg_[0].remove(x);
        seg_[1].push_front(x);
        while (SegOf(x) >= 0 && Size(SegOf(x)) > max_[SegOf(x)]) Cool(SegOf(x));
      }
      Add(x);
      if (++counter_ >= 32 * m_) {
        counter_ = 0;
        for (uint32_t& b : bf_) b >>= 1;
      }
      return true;
    }
    if (in_w) return true;
    while (static_cast<int64_t>(window_.size()) + MainSize() + 1 > c_) Evict();
    window_.push_front(x);
    Add(x);
    return false;
  }
  std::set<uint64_t> Resident() const {
    std::set<uint64_t> out(window_.begin(), window_.end());
    out.insert(seg_[0].begin(), seg_[0].end());
    out.insert(seg_[1].begin(), seg_[1].end());
    return out;
  }
  uint32_t Estimate(uint64_t x) const {
    uint32_t m = std::numeric_limits<uint32_t>::max();
    for (int i = 0; i < hashes_; ++i) m = std::min(m, bf_[Slot(x, i)]);
    return m;
  }

 private:
  size_t Slot(uint64_t x, int i) const {
    const auto a = static_cast<uint32_t>(Xxh64OfUint64(x, 0x12345678));
    const auto b = static_cast<uint32_t>(Xxh64OfUint64(x, 0x12344321));
    return (a + static_cast<uint32_t>(i) * b) % static_cast<uint32_t>(bf_.size());
  }
  void Add(uint64_t x) {
    for (int i = 0; i < hashes_; ++i) ++bf_[Slot(x, i)];
  }
  int SegOf(uint64_t x) const { return Has(seg_[0], x) ? 0 : Has(seg_[1], x) ? 1 : -1; }
  int64_t Size(int s) const { return static_cast<int64_t>(seg_[s].size()); }
  int64_t MainSize() const { return Size(0) + Size(1); }
  uint64_t Victim() const { return Size(0) > 0 ? seg_[0].back() : seg_[1].back(); }
  void SlruEvict() { seg_[Size(0) > 0 ? 0 : 1].pop_back(); }
  void SlruInsert(uint64_t x) {
    int s = 0;
    if (Size(0) + 1 <= max_[0]) {
      s = 0;
    } else if (Size(1) + 1 <= max_[1]) {
      s = 1;
    } else {
      while (MainSize() + 1 > m_) SlruEvict();
    }
    seg_[s].push_front(x);
  }
  void Cool(int s) {
    if (s == 0) return SlruEvict();
    const uint64_t v = seg_[1].back();
    seg_[1].pop_back();
    seg_[0].push_front(v);
    while (Size(0) > max_[0]) Cool(0);
  }
  void Evict() {
    for (;;) {
      if (window_.empty()) return SlruEvict();
      const uint64_t v = window_.back();
      if (MainSize() + 1 <= m_) {
        SlruInsert(v);
        window_.pop_back();
        Add(v);
        continue;
      }
      if (MainSize() > 0 && Estimate(v) > Estimate(Victim())) {
        SlruEvict();
        window_.pop_back();
        SlruInsert(v);
        Add(v);
        continue;
      }
      window_.pop_back();
      Add(v);
      return;
    }
  }

  int64_t c_, m_;
  int64_t max_[2] = {0, 0};
  int hashes_ = 0;
  std::vector<uint32_t> bf_;
  int64_t counter_ = 0;
  std::list<uint64_t> window_;
  std::list<uint64_t> seg_[2];
};

// Drives `name` request by request through PagingPolicy::Access and checks every hit and every
// dropped page against the reference `Ref` (dropped = resident before or admitted, not after).
template <class Ref>
int64_t CompareRequestByRequest(const Pages& requests,
                                const std::string& name,
                                int64_t k,
                                bool check_drops) {
  const DenseRequests dense = OneRequestPerStep(Densify(testing::SequenceOf(requests)));
  auto policy = MakePagingPolicy(name);
  EXPECT_TRUE(policy->ManagesResidency());
  PolicySetup setup;
  setup.requests = &dense;
  setup.cache_size = k;
  policy->Reset(setup);
  Ref ref(k);
  std::set<uint64_t> before;
  std::vector<uint32_t> dropped;
  int64_t faults = 0;
  for (int64_t i = 0; i < dense.requests(); ++i) {
    const uint32_t page = dense.page[static_cast<size_t>(i)];
    const uint64_t id = dense.original_id[page];
    dropped.clear();
    const bool hit = policy->Access(i, page, dropped);
    const bool ref_hit = ref.Get(id);
    if (hit != ref_hit) {
      ADD_FAILURE() << name << " k=" << k << ": request " << i << " (page " << id << ") "
                    << (hit ? "hit" : "missed") << ", the reference "
                    << (ref_hit ? "hit" : "missed");
      return -1;
    }
    faults += hit ? 0 : 1;
    if (!check_drops) continue;
    const std::set<uint64_t> after = ref.Resident();
    std::set<uint64_t> expected;
    before.insert(id);
    for (const uint64_t p : before) {
      if (after.count(p) == 0) expected.insert(p);
    }
    std::set<uint64_t> got;
    for (const uint32_t p : dropped) got.insert(dense.original_id[p]);
    EXPECT_EQ(got.size(), dropped.size()) << "a page dropped twice at request " << i;
    if (got != expected) {
      ADD_FAILURE() << name << " k=" << k << ": request " << i << " dropped other pages";
      return -1;
    }
    before = after;
  }
  return faults;
}

// ---- hand-worked sequences ----

TEST(Lirs, HandWorkedSequenceAtThreeBlocks) {
  // C = 3: hirs_limit = max(1, floor(0.03)) = 1, lirs_limit = 2. A=1 B=2 C=3 D=4 E=5.
  // S listed top first, (L) LIR, (h) resident HIR, (n) non-resident HIR.
  //  1 A miss: LIR set has room.               S = A(L)                 Q = -
  //  2 B miss: LIR.                            S = B(L) A(L)            Q = -
  //  3 C miss: LIR set full, Q has room.       S = C(h) B(L) A(L)       Q = C
  //  4 D miss: both full, Q's bottom C is evicted (non-resident in S).
  //                                            S = D(h) C(n) B(L) A(L)  Q = D     evicts C
  //  5 C miss (non-resident HIR in S): to the top; the LIR set is full, so the bottom LIR A is
  //    demoted into Q, which first evicts D (non-resident); S pruned down to B; C becomes LIR.
  //                                            S = C(L) D(n) B(L)       Q = A     evicts D
  //  6 A hit (in Q only): the LIR set is full: B is demoted into Q, which first evicts Q's
  //    bottom, A itself; pruning drops D; A enters S as a resident HIR block, counted nowhere.
  //                                            S = A(h) C(L)            Q = B
  //  7 E miss: lirs = 1 < 2, so E becomes LIR with nothing evicted: A, B, C, E are all resident,
  //    4 blocks in a cache of 3 (libCacheSim's bookkeeping, reproduced).
  //                                            S = E(L) A(h) C(L)       Q = B
  //  8 B hit (in Q only): C is demoted, evicting B from Q; pruning drops A from S's bottom, and
  //    A, in neither S's LIR set nor Q, is no longer resident; B enters S.
  //                                            S = B(h) E(L)            Q = C     evicts A
  //  9 A miss: E and A LIR, nothing evicted.   S = A(L) B(h) E(L)       Q = C
  // 10 D miss: both full: Q's bottom C is evicted (not in S: forgotten).
  //                                            S = D(h) A(L) B(h) E(L)  Q = D     evicts C
  // 8 faults (hits at 6 and 8), evictions C@3 D@4 A@7 C@9 (0-based request index).
  const Replayed r = ReplayClassic({1, 2, 3, 4, 3, 1, 5, 2, 1, 4}, "lirs", 3);
  EXPECT_EQ(r.faults, 8);
  const std::vector<std::pair<int64_t, uint64_t>> expected = {{3, 3}, {4, 4}, {7, 1}, {9, 3}};
  EXPECT_EQ(r.evictions, expected);
  EXPECT_EQ(ReplayClassic({1, 2, 3, 4, 3, 1, 5, 2, 1, 4}, "LIRS", 3).faults, 8);
}

TEST(Lirs, AdmitsNothingAtOneBlockLikeLibCacheSim) {
  // C = 1: lirs_limit = 0, so LIRS_can_insert refuses every object (the engine logs each
  // request's page as leaving at once).
  const Replayed r = ReplayClassic({1, 1, 2, 2, 1}, "lirs", 1);
  EXPECT_EQ(r.faults, 5);
  EXPECT_EQ(r.evictions.size(), 5u);
}

TEST(WTinyLfu, HashesObjectIdsWithLibCacheSimsXxh64) {
  // XXH64(&id, 8, seed) from libCacheSim's dataStructure/hash/xxhash.h (XXH_INLINE_ALL).
  static_assert(Xxh64OfUint64(0, 0x12345678) == 7474699180120069235ULL);
  static_assert(Xxh64OfUint64(0, 0x12344321) == 14025973215857892985ULL);
  static_assert(Xxh64OfUint64(1, 0x12345678) == 512166280014807191ULL);
  static_assert(Xxh64OfUint64(12345, 0x12345678) == 15384485318039433706ULL);
  static_assert(Xxh64OfUint64(12345, 0x12344321) == 1699571549110531349ULL);
  static_assert(Xxh64OfUint64(~0ULL, 0x12345678) == 6968065319778549417ULL);
  static_assert(Xxh64OfUint64(1000003, 0x12344321) == 16420642021602784438ULL);
}

TEST(WTinyLfu, HandWorkedAdmissionFilterAtOneHundredObjects) {
  // C = 100: window W = 1, main M = 99 as SLRU with probation 19 and protected 79 (98 < 99).
  // The sketch counts, per object, its insertions, its moves out of the window and its main
  // hits; the ids used below have exact estimates (checked at the end).
  //  1..100  misses; the window (an LRU bounded only by the cache) holds all 100.
  //  101     miss, cache full: the window's tail moves to main while it has room: 1..19 to
  //          probation, 20..98 to protected, 99 to probation (both segments full but main is
  //          not: probation holds 20). Main full: window victim 100 (count 1) against main's
  //          victim, probation's tail 1 (count 2): not more frequent, 100 is evicted.
  //  100     miss: window victim 101 (count 1) vs 1 (2): 101 is evicted. 100 now counts 3.
  //  5       hit in probation: promoted to protected (80 > 79), protected's tail 20 cools to
  //          probation (20 > 19), probation's tail 1 is evicted: an eviction on a hit.
  //  102     miss: window 1 + main 98 < 100, nothing evicted.
  //  103     miss: window victim 100 moves to main (room: 98 < 99; into an over-full
  //          probation); window victim 102 (count 1) vs probation's tail 2 (count 2): evicted.
  //  102     miss: window victim 103 (1) vs 2 (2): 103 evicted. 102 now counts 3.
  //  104     miss: window victim 102 (3) vs 2 (2): admitted, 2 evicted; the window is empty, so
  //          main's victim 3 is evicted too: two evictions for one miss.
  Pages requests;
  for (uint64_t p = 1; p <= 100; ++p) requests.push_back(p);
  for (const uint64_t p : {101, 100, 5, 102, 103, 102, 104}) requests.push_back(p);
  const Replayed r = ReplayClassic(requests, "wtinylfu", 100);
  EXPECT_EQ(r.faults, 106);
  const std::vector<std::pair<int64_t, uint64_t>> expected = {
      {100, 100}, {101, 101}, {102, 1}, {104, 102}, {105, 103}, {106, 2}, {106, 3}};
  EXPECT_EQ(r.evictions, expected);
  EXPECT_EQ(ReplayClassic(requests, "tinylfu", 100).faults, 106);
  // The estimates the reasoning used are exact (no id has all 10 counters shared).
  RefWTinyLfu ref(100);
  for (const uint64_t p : requests) ref.Get(p);
  EXPECT_EQ(ref.Estimate(102), 4u);  // inserted twice, moved twice (once into main)
  EXPECT_EQ(ref.Estimate(100), 4u);  // inserted twice, moved twice
  EXPECT_EQ(ref.Estimate(5), 3u);    // inserted, moved, one main hit
  EXPECT_EQ(ref.Estimate(3), 2u);    // inserted, moved
}

// ---- reference comparisons ----

TEST(Lirs, MatchesTheReferenceRequestByRequest) {
  int compared = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const double alpha = 0.6 + 0.15 * static_cast<double>(seed);
    const Pages requests = ZipfRequests(seed, 3000, 500 + 150 * static_cast<int>(seed), alpha);
    for (const int64_t k :
         {1, 2, 3, 4, 5, 7, 10, 16, 25, 50, 99, 100, 101, 150, 199, 200, 201, 250, 300, 301}) {
      const int64_t faults =
          CompareRequestByRequest<RefLirs>(requests, "lirs", k, /*check_drops=*/k <= 50);
      EXPECT_GE(faults, 0) << "seed=" << seed;
      EXPECT_EQ(ReplayClassic(requests, "lirs", k).faults, faults) << "k=" << k;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 80);
}

TEST(WTinyLfu, MatchesTheReferenceRequestByRequest) {
  int compared = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const double alpha = 0.6 + 0.15 * static_cast<double>(seed);
    const Pages requests = ZipfRequests(seed, 3000, 500 + 150 * static_cast<int>(seed), alpha);
    for (const int64_t k :
         {1, 2, 3, 4, 5, 6, 7, 10, 25, 99, 100, 101, 150, 199, 200, 201, 250, 300, 301, 350}) {
      const int64_t faults =
          CompareRequestByRequest<RefWTinyLfu>(requests, "wtinylfu", k, /*check_drops=*/k <= 101);
      EXPECT_GE(faults, 0) << "seed=" << seed;
      EXPECT_EQ(ReplayClassic(requests, "wtinylfu", k).faults, faults) << "k=" << k;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 80);
}

TEST(WTinyLfu, DecaysTheSketchAfterThirtyTwoMainSizesOfMainHits) {
  // C = 100 (M = 99): 32 * 99 = 3168 main hits halve every counter; a long, skewed sequence
  // crosses that several times. The reference decays on its own counter.
  const Pages requests = ZipfRequests(9, 20000, 300, 1.1);
  EXPECT_GE(CompareRequestByRequest<RefWTinyLfu>(requests, "wtinylfu", 100, false), 0);
  EXPECT_GE(CompareRequestByRequest<RefWTinyLfu>(requests, "wtinylfu", 120, false), 0);
}

// ---- the engine's rule for self-managed policies under step semantics ----

TEST(SelfManagedPolicies, StepSemanticsHoldPinnedDropsUntilTheStepEnds) {
  // With k larger than every step, no request bypasses: the faults are the classic replay's, and
  // a page the policy drops after its step requested it leaves at the step's last request.
  for (const char* name : {"lirs", "wtinylfu"}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      const RequestSequence seq = testing::RandomSequence(seed, 600, 40, 4);
      const DenseRequests steps = Densify(seq);
      const DenseRequests classic = OneRequestPerStep(Densify(seq));
      for (const int64_t k : {5, 8, 13}) {
        auto a = MakePagingPolicy(name);
        auto b = MakePagingPolicy(name);
        std::vector<EvictionEvent> events;
        const ReplayResult r = Replay(steps, *a, Options(k), &events);
        EXPECT_EQ(r.bypasses, 0);
        EXPECT_EQ(r.faults, Replay(classic, *b, Options(k)).faults) << name << " k=" << k;
        for (const EvictionEvent& e : events) {
          const auto step =
              std::upper_bound(steps.step_begin.begin(), steps.step_begin.end(), e.index) -
              steps.step_begin.begin() - 1;
          const int64_t begin = steps.step_begin[static_cast<size_t>(step)];
          const int64_t end = steps.step_begin[static_cast<size_t>(step) + 1];
          bool requested = false;
          for (int64_t i = begin; i <= e.index; ++i) requested |= steps.page[i] == e.page;
          if (requested && steps.page[e.index] != e.page) {
            EXPECT_EQ(e.index, end - 1) << name << ": pinned page left mid-step";
          }
        }
      }
    }
  }
}

TEST(SelfManagedPolicies, StepSemanticsBypassOnceTheStepHoldsTheCache) {
  // k = 2, steps of 4 new pages: the first two are admitted, the last two bypass.
  RequestSequence seq;
  for (int s = 0; s < 10; ++s) {
    const std::vector<uint64_t> pages = {100ULL + 4 * s, 101ULL + 4 * s, 102ULL + 4 * s,
                                         103ULL + 4 * s};
    seq.AddStep(s, pages);
  }
  for (const char* name : {"lirs", "wtinylfu"}) {
    auto policy = MakePagingPolicy(name);
    const ReplayResult r = Replay(Densify(seq), *policy, Options(2));
    EXPECT_EQ(r.bypasses, 20) << name;
    EXPECT_EQ(r.faults, 40) << name;
    auto evict = MakePagingPolicy(name);
    const ReplayResult e = Replay(Densify(seq), *evict, Options(2, Mode::kEvict));
    EXPECT_EQ(e.faults, 20) << name;  // first requests are free unless bypassed
  }
}

TEST(SelfManagedPolicies, ExperimentsRunThemUnderClassicSemanticsOnly) {
  // In an experiment, step-semantics counts of a self-managed policy would not be capacity-exact
  // (held pinned drops, LIRS's extra blocks), so RunExperiment refuses them there.
  const std::vector<RequestSequence> streams{testing::RandomSequence(4, 200, 30, 3)};
  ExperimentOptions options;
  options.cache_sizes = {4, 120};
  options.policies = {"lru", "lirs", "wtinylfu"};
  options.semantics = Semantics::kClassic;
  const ExperimentResult classic = RunExperiment(streams, options);
  ASSERT_EQ(classic.mrc.size(), 6u);
  const DenseRequests dense = OneRequestPerStep(Densify(streams[0]));
  for (const MrcRow& row : classic.mrc) {
    auto policy = MakePagingPolicy(row.policy);
    EXPECT_EQ(row.faults, Replay(dense, *policy, Options(row.cache_size)).faults) << row.policy;
  }
  EXPECT_TRUE(FindPagingPolicy("lirs").self_managed);
  EXPECT_TRUE(FindPagingPolicy("wtinylfu").self_managed);
  EXPECT_FALSE(FindPagingPolicy("twoq").self_managed);
  options.semantics = Semantics::kStep;
  try {
    RunExperiment(streams, options);
    ADD_FAILURE() << "lirs accepted under step semantics";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'lirs' runs only under --semantics classic"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kvsim::paging
