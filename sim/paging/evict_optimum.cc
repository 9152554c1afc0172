#include "sim/paging/evict_optimum.h"

#include <limits>
#include <queue>
#include <utility>

#include "common/error.h"

namespace kvsim::paging {
namespace {

// A residual graph in compressed form: arcs come in pairs (a, a ^ 1).
class FlowGraph {
 public:
  explicit FlowGraph(int64_t nodes) : first_(static_cast<size_t>(nodes), -1) {}
  void AddArc(int64_t from, int64_t to, int64_t capacity, int64_t cost) {
    Add(from, to, capacity, cost);
    Add(to, from, 0, -cost);
  }
  int64_t nodes() const { return static_cast<int64_t>(first_.size()); }

  // One unit along a shortest path (reduced costs with `potential`); returns its true cost, or
  // -1 if the sink is unreachable. Updates the potentials (Johnson), keeping reduced costs >= 0.
  int64_t AugmentOne(int64_t source, int64_t sink, std::vector<int64_t>& potential) {
    constexpr int64_t kInf = std::numeric_limits<int64_t>::max() / 4;
    std::vector<int64_t> dist(first_.size(), kInf);
    std::vector<int64_t> via(first_.size(), -1);
    using Item = std::pair<int64_t, int64_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<>> queue;
    dist[static_cast<size_t>(source)] = 0;
    queue.push({0, source});
    while (!queue.empty()) {
      const auto [d, u] = queue.top();
      queue.pop();
      if (d != dist[static_cast<size_t>(u)]) continue;
      for (int64_t a = first_[static_cast<size_t>(u)]; a >= 0;
           a = arcs_[static_cast<size_t>(a)].next) {
        const Arc& arc = arcs_[static_cast<size_t>(a)];
        if (arc.capacity == 0) continue;
        const int64_t reduced =
            arc.cost + potential[static_cast<size_t>(u)] - potential[static_cast<size_t>(arc.to)];
        KVSIM_ASSERT(reduced >= 0, "negative reduced cost {} in min-cost flow", reduced);
        const int64_t nd = d + reduced;
        if (nd < dist[static_cast<size_t>(arc.to)]) {
          dist[static_cast<size_t>(arc.to)] = nd;
          via[static_cast<size_t>(arc.to)] = a;
          queue.push({nd, arc.to});
        }
      }
    }
    if (dist[static_cast<size_t>(sink)] == kInf) return -1;
    for (size_t v = 0; v < first_.size(); ++v) {
      potential[v] += dist[v] == kInf ? dist[static_cast<size_t>(sink)] : dist[v];
    }
    int64_t cost = 0;
    for (int64_t v = sink; v != source;) {
      const auto a = static_cast<size_t>(via[static_cast<size_t>(v)]);
      arcs_[a].capacity -= 1;
      arcs_[a ^ 1].capacity += 1;
      cost += arcs_[a].cost;
      v = arcs_[a ^ 1].to;
    }
    return cost;
  }

 private:
  struct Arc {
    int64_t to;
    int64_t capacity;
    int64_t cost;
    int64_t next;
  };
  void Add(int64_t from, int64_t to, int64_t capacity, int64_t cost) {
    arcs_.push_back({to, capacity, cost, first_[static_cast<size_t>(from)]});
    first_[static_cast<size_t>(from)] = static_cast<int64_t>(arcs_.size()) - 1;
  }

  std::vector<int64_t> first_;
  std::vector<Arc> arcs_;
};

}  // namespace

std::vector<int64_t> EvictOptimumCurve(const DenseRequests& requests,
                                       int64_t max_cache_size,
                                       const std::function<void(int64_t)>& on_slots) {
  KVSIM_ASSERT(max_cache_size >= 0, "negative cache size {}", max_cache_size);
  const int64_t steps = requests.steps();
  const int64_t n = requests.requests();
  std::vector<int64_t> misses(static_cast<size_t>(max_cache_size) + 1, n);
  if (n == 0 || max_cache_size == 0) return misses;
  // Node ids: T_s = s for s in [0, steps]; request i = steps + 1 + i.
  FlowGraph graph(steps + 1 + n);
  for (int64_t s = 0; s < steps; ++s) graph.AddArc(s, s + 1, max_cache_size, 2);
  std::vector<int64_t> last_node(requests.num_pages(), -1);
  std::vector<int64_t> last_step(requests.num_pages(), -1);
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t i = requests.step_begin[static_cast<size_t>(s)];
         i < requests.step_begin[static_cast<size_t>(s) + 1]; ++i) {
      const uint32_t p = requests.page[static_cast<size_t>(i)];
      const int64_t node = steps + 1 + i;
      if (last_node[p] < 0) {
        graph.AddArc(s, node, 1, 1 - 1);
      } else {
        graph.AddArc(last_node[p], node, 1, 2 * (s - last_step[p]) - 1);
      }
      graph.AddArc(node, s + 1, 1, 1);
      last_node[p] = node;
      last_step[p] = s;
    }
  }
  std::vector<int64_t> potential(static_cast<size_t>(graph.nodes()), 0);
  int64_t reward = 0;
  int64_t k = 1;
  for (; k <= max_cache_size; ++k) {
    const int64_t cost = graph.AugmentOne(0, steps, potential);
    KVSIM_ASSERT(cost >= 0, "no augmenting path for slot {} although idle arcs remain", k);
    const int64_t gain = 2 * steps - cost;
    if (gain == 0) break;  // marginal gains never grow: later slots gain nothing either
    reward += gain;
    misses[static_cast<size_t>(k)] = n - reward;
    if (on_slots) on_slots(1);
  }
  if (on_slots && k <= max_cache_size) on_slots(max_cache_size - k + 1);
  for (; k <= max_cache_size; ++k) misses[static_cast<size_t>(k)] = n - reward;
  return misses;
}

}  // namespace kvsim::paging
