#include "sim/paging/engine.h"

#include <limits>

#include "common/error.h"

namespace kvsim::paging {
namespace {

enum PageState : uint32_t { kUnseen = 0, kResident = 1, kGone = 2, kHeld = 3 };

// The replay of a self-managed policy (PagingPolicy::ManagesResidency(), engine.h).
ReplayResult ReplaySelfManaged(const DenseRequests& requests,
                               PagingPolicy& policy,
                               const ReplayOptions& options,
                               std::vector<EvictionEvent>* evictions) {
  const uint32_t num_pages = requests.num_pages();
  std::vector<PageSlot> slots(num_pages);
  const bool evict_mode = options.mode == Mode::kEvict;
  const int64_t capacity = options.cache_size;
  const uint32_t* page = requests.page.data();
  ReplayResult result;
  result.requests = requests.requests();
  std::vector<uint32_t> dropped;
  std::vector<uint32_t> held;  // dropped by the policy while pinned: leave at the step's end
  auto leave = [&](int64_t index, uint32_t p) {
    slots[p].state = kGone;
    if (evictions != nullptr) evictions->push_back({index, p});
  };
  for (int64_t s = 0; s < requests.steps(); ++s) {
    const auto stamp = static_cast<uint32_t>(s + 1);
    int64_t pinned_resident = 0;
    const int64_t begin = requests.step_begin[static_cast<size_t>(s)];
    const int64_t end = requests.step_begin[static_cast<size_t>(s) + 1];
    for (int64_t i = begin; i < end; ++i) {
      const uint32_t p = page[i];
      PageSlot& slot = slots[p];
      KVSIM_ASSERT(slot.state != kHeld, "step {} requests page {} twice", s, p);
      const bool was_resident = slot.state == kResident;
      if (!was_resident) {
        if (evict_mode && slot.state == kGone) {
          ++result.faults;
          continue;
        }
        if (!evict_mode) ++result.faults;
        if (pinned_resident >= capacity) {
          if (evict_mode) ++result.faults;
          ++result.bypasses;
          leave(i, p);
          continue;
        }
      }
      dropped.clear();
      const bool hit = policy.Access(i, p, dropped);
      KVSIM_ASSERT(hit == was_resident,
                   "policy reported a {} for page {} at request {}, which is {}",
                   hit ? "hit" : "miss", p, i, was_resident ? "resident" : "not resident");
      slot.state = kResident;
      slot.pin_step = stamp;
      ++pinned_resident;
      for (const uint32_t d : dropped) {
        KVSIM_ASSERT(d < num_pages && slots[d].state == kResident,
                     "policy dropped page {} at request {}, which is not resident", d, i);
        if (d == p && !hit) {  // not admitted: lost in kEvict (a fault even on a first request)
          --pinned_resident;
          if (evict_mode) ++result.faults;
          leave(i, p);
        } else if (slots[d].pin_step == stamp) {
          slots[d].state = kHeld;
          held.push_back(d);
        } else {
          leave(i, d);
        }
      }
    }
    for (const uint32_t d : held) leave(end - 1, d);
    held.clear();
  }
  return result;
}

}  // namespace

const char* ModeName(Mode mode) { return mode == Mode::kOffload ? "offload" : "evict"; }

bool PagingPolicy::Access(int64_t, uint32_t, std::vector<uint32_t>&) {
  throw InternalError("PagingPolicy::Access called on a policy that does not manage residency");
}

ReplayResult Replay(const DenseRequests& requests,
                    PagingPolicy& policy,
                    const ReplayOptions& options,
                    std::vector<EvictionEvent>* evictions) {
  KVSIM_ASSERT(options.cache_size >= 0, "negative cache size {}", options.cache_size);
  KVSIM_ASSERT(
      options.bits.empty() || static_cast<int64_t>(options.bits.size()) == requests.requests(),
      "{} prediction bits for {} requests", options.bits.size(), requests.requests());
  PolicySetup setup;
  setup.requests = &requests;
  setup.cache_size = options.cache_size;
  setup.mode = options.mode;
  setup.seed = options.seed;
  setup.bits = options.bits;
  policy.Reset(setup);

  const uint32_t num_pages = requests.num_pages();
  KVSIM_ASSERT(requests.steps() < std::numeric_limits<uint32_t>::max(), "{} steps",
               requests.steps());
  if (policy.ManagesResidency()) return ReplaySelfManaged(requests, policy, options, evictions);
  std::vector<PageSlot> slots(num_pages);
  const bool evict_mode = options.mode == Mode::kEvict;
  const int64_t capacity = options.cache_size;
  const uint32_t* page = requests.page.data();
  ReplayResult result;
  result.requests = requests.requests();
  int64_t resident = 0;
  for (int64_t s = 0; s < requests.steps(); ++s) {
    const auto stamp = static_cast<uint32_t>(s + 1);
    int64_t pinned_resident = 0;  // resident pages this step has requested
    const int64_t end = requests.step_begin[static_cast<size_t>(s) + 1];
    for (int64_t i = requests.step_begin[static_cast<size_t>(s)]; i < end; ++i) {
      const uint32_t p = page[i];
      PageSlot& slot = slots[p];
      const uint32_t st = slot.state;
      if (st == kResident) {
        policy.OnHit(i, p);
        slot.pin_step = stamp;
        ++pinned_resident;
        continue;
      }
      if (evict_mode && st == kGone) {
        ++result.faults;
        continue;
      }
      if (!evict_mode) ++result.faults;
      if (resident == capacity) {
        if (pinned_resident == capacity) {
          if (evict_mode) ++result.faults;
          ++result.bypasses;
          slot.state = kGone;
          if (evictions != nullptr) evictions->push_back({i, p});
          continue;
        }
        const uint32_t victim = policy.Evict(i, PinView(slots.data(), stamp));
        KVSIM_ASSERT(victim < num_pages && slots[victim].state == kResident &&
                         slots[victim].pin_step != stamp,
                     "policy evicted page {} at request {}, which is not an unpinned resident",
                     victim, i);
        slots[victim].state = kGone;
        --resident;
        if (evictions != nullptr) evictions->push_back({i, victim});
      }
      slot.state = kResident;
      ++resident;
      slot.pin_step = stamp;
      ++pinned_resident;
      policy.OnInsert(i, p);
    }
  }
  return result;
}

}  // namespace kvsim::paging
