#pragma once
// The exact offline optimum of pure eviction (card memory-and-paging.md 6.1): the fewest misses
// over all schedules that hold at most k pages during every step, where a page can be held only
// over one run of consecutive steps starting at the step of its first request (it is produced
// then; once dropped it never returns), and a request is a miss unless its page is held during
// its step. Every replay of the engine in Mode::kEvict is such a schedule (the held set of a
// step = the resident set after it), so no online policy beats this.
//
// Solved as a min-cost flow (a k-machine interval scheduling problem). Nodes: time T_0..T_S
// (S steps) and one node (p, s) per request of page p at step s. Arcs: T_s -> T_{s+1} (capacity
// k, reward 0: an idle slot during step s); T_{s1} -> (p, s1) at p's first request (reward 1);
// (p, s_i) -> (p, s_{i+1}) between consecutive requests (reward 1: held until the next one);
// (p, s_i) -> T_{s_i + 1} (reward 0: released). Page arcs have capacity 1, so a page leaves its
// chain once and cannot return. k units go from T_0 to T_S; misses = requests - reward.
// The card's chain has a node per (token, step); keeping only the steps where the page is
// requested gives the same optimum with O(requests) arcs.
//
// Negative rewards become non-negative costs by an offset (the graph is a DAG): place T_s at
// coordinate 2s and (p, s) at 2s + 1 and charge each arc (coordinate span - reward) >= 0. Every
// T_0 -> T_S path spans 2S, so each unit pays the constant 2S and the optimum is unchanged.
// Successive shortest paths (Dijkstra with potentials) pushes one unit per round; after u rounds
// the flow is optimal for cache size u, so one run gives the whole curve.
#include <cstdint>
#include <functional>
#include <vector>

#include "sim/paging/request_sequence.h"

namespace kvsim::paging {

// misses[k] for k = 0..max_cache_size. Cost O(max_cache_size * requests * log requests); stops
// early once an extra slot gains nothing.
// `on_slots(n)`, if given, is told after each augmentation (and once for the slots skipped by the
// early stop) that n more slots are done: max_cache_size in all (a progress bar's feed).
std::vector<int64_t> EvictOptimumCurve(const DenseRequests& requests,
                                       int64_t max_cache_size,
                                       const std::function<void(int64_t)>& on_slots = {});

}  // namespace kvsim::paging
