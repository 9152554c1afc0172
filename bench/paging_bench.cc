// Replay speed of the paging engine per policy, in requests per second, on the workload used to
// compare with libCacheSim: 5M requests drawn from Zipf(alpha = 1) over 100k objects (fixed
// seed), 1000 slots, one request per step, offload mode. libCacheSim on this machine: LRU about
// 13 M req/s, Belady about 7 M req/s (figures from the issue). Replay times exclude building the
// dense ids and next uses, which are reported separately (libCacheSim hashes ids inside its
// cache instead). Prints figures; never asserts.
//
// `--side-by-side [--cachesim PATH] [--requests N]`: the policies kvsim shares with libCacheSim
// beside cachesim on the same sequence (bench/paging_side_by_side.h); cachesim is looked up on
// PATH unless given.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "bench/paging_side_by_side.h"
#include "sim/paging/engine.h"
#include "sim/paging/evict_optimum.h"
#include "sim/paging/predictions.h"
#include "sim/paging/registry.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// One request per step, object ids drawn from Zipf(alpha) over `objects` ids by inverting the
// CDF with a binary search; ids are scattered by a multiplicative hash like real object ids.
kvsim::paging::RequestSequence ZipfSequence(int64_t requests,
                                            int64_t objects,
                                            double alpha,
                                            uint64_t seed) {
  std::vector<double> cdf(static_cast<size_t>(objects));
  double sum = 0;
  for (int64_t i = 0; i < objects; ++i) {
    sum += 1.0 / std::pow(static_cast<double>(i + 1), alpha);
    cdf[static_cast<size_t>(i)] = sum;
  }
  std::mt19937_64 rng(seed);
  kvsim::paging::RequestSequence seq;
  seq.page_bytes = 1;
  seq.pages.reserve(static_cast<size_t>(requests));
  seq.step_begin.reserve(static_cast<size_t>(requests) + 1);
  seq.step_position.reserve(static_cast<size_t>(requests));
  for (int64_t t = 0; t < requests; ++t) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * sum;
    const auto rank =
        static_cast<uint64_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    seq.pages.push_back(rank * 0x9e3779b97f4a7c15ULL);
    seq.step_position.push_back(t);
    seq.step_begin.push_back(t + 1);
  }
  return seq;
}

}  // namespace

// cachesim on PATH, or "".
std::string CachesimOnPath() {
  FILE* pipe = popen("command -v cachesim 2>/dev/null", "r");
  if (pipe == nullptr) return "";
  char buffer[4096] = {0};
  std::string out;
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

int main(int argc, char** argv) {
  using namespace kvsim::paging;
  bool side_by_side = false;
  kvsim::bench::SideBySideOptions side;
  bool cachesim_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--side-by-side") {
      side_by_side = true;
    } else if (arg == "--cachesim" && i + 1 < argc) {
      side.cachesim = argv[++i];
      cachesim_given = true;
    } else if (arg == "--requests" && i + 1 < argc) {
      side.requests = std::stoll(argv[++i]);
    } else {
      fmt::print(stderr,
                 "usage: {} [--side-by-side [--cachesim PATH] [--requests N]]: unknown '{}'\n",
                 argv[0], arg);
      return 2;
    }
  }
  if (side_by_side) {
    if (!cachesim_given) side.cachesim = CachesimOnPath();
    kvsim::bench::RunSideBySide(ZipfSequence(side.requests, side.objects, 1.0, 42), side);
    return 0;
  }
  constexpr int64_t kRequests = 5'000'000;
  constexpr int64_t kObjects = 100'000;
  constexpr int64_t kSlots = 1000;
  const RequestSequence seq = ZipfSequence(kRequests, kObjects, 1.0, 42);

  auto start = Clock::now();
  const DenseRequests dense = Densify(seq);
  const double densify_s = Seconds(start);
  fmt::print("paging_bench: {} requests, Zipf(1.0) over {} objects ({} requested), {} slots\n",
             kRequests, kObjects, dense.num_pages(), kSlots);
  fmt::print("{:<14} {:>12} {:>10} {:>12}\n", "policy", "M req/s", "seconds", "miss ratio");
  fmt::print("{:<14} {:>12.2f} {:>10.3f} {:>12}\n", "(densify)",
             static_cast<double>(kRequests) / densify_s / 1e6, densify_s, "");
  for (const PolicyInfo& info : PagingPolicies()) {
    const std::vector<uint8_t> bits = OracleBits(info.predictions, dense, kSlots);
    auto policy = MakePagingPolicy(info.name);
    ReplayOptions options;
    options.cache_size = kSlots;
    options.seed = 1;
    options.bits = bits;
    double best = 1e300;
    ReplayResult result;
    for (int rep = 0; rep < 3; ++rep) {  // best of 3: the machine is shared
      start = Clock::now();
      result = Replay(dense, *policy, options);
      best = std::min(best, Seconds(start));
    }
    fmt::print("{:<14} {:>12.2f} {:>10.3f} {:>12.4f}\n", info.name,
               static_cast<double>(kRequests) / best / 1e6, best,
               static_cast<double>(result.faults) / static_cast<double>(kRequests));
  }

  // The pure-eviction optimum is a min-cost flow: far slower, so timed on a smaller prefix.
  constexpr int64_t kFlowRequests = 20'000;
  constexpr int64_t kFlowSlots = 100;
  const RequestSequence small = ZipfSequence(kFlowRequests, 2'000, 1.0, 42);
  const DenseRequests small_dense = Densify(small);
  start = Clock::now();
  const std::vector<int64_t> curve = EvictOptimumCurve(small_dense, kFlowSlots);
  const double flow_s = Seconds(start);
  fmt::print("evict-opt curve k=0..{} on {} requests: {:.3f} s (misses at k={}: {})\n", kFlowSlots,
             kFlowRequests, flow_s, kFlowSlots, curve.back());
  return 0;
}
