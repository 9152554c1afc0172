#pragma once
// The paging engine: replays a DenseRequests sequence against one PagingPolicy and a cache of
// `cache_size` pages. The engine owns residency, pinning, fault counting and the pure-eviction
// rule; a policy only keeps its own order and names victims (the paging twin of KvCache).
// Self-managed policies (ManagesResidency(), below) decide hits and evictions themselves.
//
// Semantics (sim/paging/README.md):
//  - Requests are replayed in order; the pages of one step are pinned from their request until
//    the step ends, so a policy never evicts a page the current step already used.
//  - A request for a non-resident page is a fault. The page is admitted, evicting one unpinned
//    victim chosen by the policy when the cache is full. If every resident page is pinned (the
//    step has already requested cache_size pages) the page bypasses the cache: served from the
//    slow tier, counted as a fault, not admitted (libCacheSim's can_insert == false path). Every
//    policy sees the same forced bypasses, so any cache_size >= 0 is feasible.
//  - kOffload: faulted pages are fetched; `faults` counts every fault, cold ones included.
//  - kEvict (pure eviction): a page that left the cache (evicted or bypassed) is lost: its later
//    requests are misses and it is never re-admitted. A page's first request admits it at no
//    cost (it is produced on the device), so `faults` counts only requests for lost pages and
//    bypassed first requests.
#include <cstdint>
#include <span>
#include <vector>

#include "sim/paging/request_sequence.h"

namespace kvsim::paging {

enum class Mode { kOffload, kEvict };
const char* ModeName(Mode mode);

// The engine's per-page state, packed in 8 bytes so a request touches one cache line of it.
struct PageSlot {
  uint32_t state = 0;     // engine-private residency state
  uint32_t pin_step = 0;  // 1 + the last step that requested the page while resident
};

// Pages requested earlier in the current step. Valid during one Evict() call.
class PinView {
 public:
  PinView(const PageSlot* slots, uint32_t stamp) : slots_(slots), stamp_(stamp) {}
  bool IsPinned(uint32_t page) const { return slots_[page].pin_step == stamp_; }

 private:
  const PageSlot* slots_;
  uint32_t stamp_;
};

struct PolicySetup {
  const DenseRequests* requests = nullptr;  // the whole sequence; offline policies read next_use
  int64_t cache_size = 0;                   // >= 1 whenever Evict() can be called
  Mode mode = Mode::kOffload;
  uint64_t seed = 0;              // randomized policies draw only from this
  std::span<const uint8_t> bits;  // one prediction bit per request, or empty
};

// Hooks are called only by Replay(), in request order. Page ids are dense (< num_pages()).
class PagingPolicy {
 public:
  virtual ~PagingPolicy() = default;
  // Called once before a replay; forgets all previous state.
  virtual void Reset(const PolicySetup& setup) = 0;
  // Request `index` found `page` resident.
  virtual void OnHit(int64_t index, uint32_t page) = 0;
  // `page` was admitted for request `index` (after any eviction it needed).
  virtual void OnInsert(int64_t index, uint32_t page) = 0;
  // Request `index` faulted with a full cache: pick a resident page that is not pinned, drop it
  // from the policy's own structures and return it. At least one such page exists. (Choosing and
  // forgetting in one call saves a second lookup in the hot path; the engine checks the choice.)
  virtual uint32_t Evict(int64_t index, const PinView& pins) = 0;

  // Self-managed policies (libCacheSim's LIRS and W-TinyLFU) evict on hits, several pages for one
  // miss, or none, so they decide hits and evictions themselves: they return true here, and the
  // engine calls Access() instead of OnHit/OnInsert/Evict (see Replay below).
  virtual bool ManagesResidency() const { return false; }
  // Request `index` for `page`: returns true on a hit. Appends to `dropped`, once each, every page
  // that was resident before this request or admitted by it and is not resident after it: the
  // requested page itself when the policy does not admit it.
  virtual bool Access(int64_t index, uint32_t page, std::vector<uint32_t>& dropped);
};

struct ReplayOptions {
  int64_t cache_size = 0;
  Mode mode = Mode::kOffload;
  uint64_t seed = 0;
  std::span<const uint8_t> bits;  // prediction bits for policies that read them
};

struct ReplayResult {
  int64_t requests = 0;
  int64_t faults = 0;    // see Mode
  int64_t bypasses = 0;  // faults that could not be admitted (every resident page pinned)
};

// One eviction: at request `index`, `page` left the cache.
struct EvictionEvent {
  int64_t index = 0;
  uint32_t page = 0;
};

// Self-managed policies (ManagesResidency()): the policy's hits are the hits and its drops the
// evictions, with no capacity check (libCacheSim's LIRS can hold more than cache_size pages, see
// sim/paging/README.md). Pins and bypass under step semantics: a page the policy drops that the
// current step already requested stays resident until the step ends (then it leaves); a request
// for a non-resident page once the step holds cache_size resident pages bypasses without reaching
// the policy. In kEvict, requests for lost pages do not reach the policy either. With one request
// per step (classic semantics) every request reaches the policy and drops take effect at once.
//
// Replays `requests` against `policy`. If `evictions` is given, every eviction and bypass (the
// requested page itself) is appended to it. Throws InternalError if the policy names a page that
// is not resident or is pinned.
ReplayResult Replay(const DenseRequests& requests,
                    PagingPolicy& policy,
                    const ReplayOptions& options,
                    std::vector<EvictionEvent>* evictions = nullptr);

}  // namespace kvsim::paging
