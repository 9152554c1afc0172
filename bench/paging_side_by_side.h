#pragma once
// `kvsim_paging_bench --side-by-side [--cachesim PATH] [--requests N]`: every policy kvsim shares
// with libCacheSim replayed in classic semantics (one request per step, offload) on one Zipf
// sequence, beside libCacheSim's cachesim on the same sequence written as oracleGeneral
// (`cachesim FILE oracleGeneral ALGO SIZE --ignore-obj-size 1 --num-thread 1`, one process per
// policy). cachesim's speed is shown twice: requests / process wall time (start-up and reading
// included) and its own printed loop throughput. Counts are compared exactly where cachesim
// prints "MISSES n", else by the miss ratio's 4 printed decimals. Prints; never asserts.
#include <fmt/core.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "sim/paging/engine.h"
#include "sim/paging/experiment.h"
#include "sim/paging/registry.h"
#include "sim/paging/request_sequence.h"

namespace kvsim::bench {

struct SideBySideOptions {
  int64_t requests = 5'000'000;
  int64_t objects = 100'000;
  int64_t cache_size = 1000;
  std::string cachesim;  // empty: not run
};

struct CachesimRun {
  std::string miss_ratio;  // as printed, 4 decimals
  int64_t misses = -1;     // exact, where cachesim prints "MISSES n" (single-cache runs of a
                           // build that prints it); else -1
  double mqps = 0;         // cachesim's own "throughput": its simulation loop, reading included
  double seconds = 0;      // process wall time
};

// Runs cachesim with `args` in `dir`; nullopt if it fails or prints no miss ratio.
inline std::optional<CachesimRun> RunCachesim(const std::string& cachesim,
                                              const std::filesystem::path& dir,
                                              const std::string& args) {
  const std::string command =
      fmt::format("cd '{}' && '{}' {} 2>/dev/null", dir.string(), cachesim, args);
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  const int status = pclose(pipe);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::smatch m;
  static const std::regex kRatio(R"(miss ratio ([0-9.]+))");
  if (status != 0 || !std::regex_search(out, m, kRatio)) return std::nullopt;
  CachesimRun run{m[1].str(), -1, 0.0, seconds};
  static const std::regex kMisses(R"(MISSES (\d+))");
  if (std::regex_search(out, m, kMisses)) run.misses = std::stoll(m[1].str());
  static const std::regex kMqps(R"(throughput ([0-9.]+) MQPS)");
  if (std::regex_search(out, m, kMqps)) run.mqps = std::stod(m[1].str());
  return run;
}

inline void RunSideBySide(const paging::RequestSequence& seq, const SideBySideOptions& options) {
  using namespace kvsim::paging;
  using Clock = std::chrono::steady_clock;
  const double load_before = LoadAverage();
  const DenseRequests dense = OneRequestPerStep(Densify(seq));
  const auto n = static_cast<double>(seq.requests());

  std::filesystem::path dir;
  if (!options.cachesim.empty()) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "kvsim_paging_bench_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      fmt::print("cannot create a temporary folder; cachesim not run\n");
    } else {
      dir = tmpl;
      WriteOracleGeneral(dir / "zipf.oracleGeneral.bin", seq);
    }
  }
  std::optional<CachesimRun> startup;  // also brings the file into the page cache
  if (!dir.empty()) {
    startup = RunCachesim(options.cachesim, dir,
                          fmt::format("zipf.oracleGeneral.bin oracleGeneral lru {} "
                                      "--ignore-obj-size 1 --num-thread 1 --num-req 1",
                                      options.cache_size));
  }

  fmt::print(
      "side by side: {} requests, Zipf(1.0) over {} objects ({} requested), cache {} objects, "
      "classic semantics, offload; cachesim: {}\n",
      seq.requests(), options.objects, dense.num_pages(), options.cache_size,
      dir.empty() ? "not run (not on PATH; --cachesim PATH)" : options.cachesim);
  fmt::print("{:<8} {:>10} {:>7} {:>8} | {:>9} {:>7} {:>7} {:>7} | {:>5} {:>7}\n", "policy",
             "kvsim", "miss", "M req/s", "cachesim", "miss", "wall", "loop", "equal", "speedup");
  const std::pair<const char*, const char*> kShared[] = {
      {"lru", "lru"},     {"fifo", "fifo"},     {"lfu", "lfu"},          {"clock", "clock"},
      {"sieve", "sieve"}, {"s3fifo", "s3fifo"}, {"arc", "arc"},          {"twoq", "twoq"},
      {"opt", "belady"},  {"lirs", "lirs"},     {"wtinylfu", "tinyLFU"}, {"lecar", "lecar"}};
  for (const auto& [ours, theirs] : kShared) {
    auto policy = MakePagingPolicy(ours);
    const auto start = Clock::now();
    const ReplayResult result =
        Replay(dense, *policy,
               {.cache_size = options.cache_size, .mode = Mode::kOffload, .seed = 1, .bits = {}});
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const std::string miss = fmt::format("{:.4f}", static_cast<double>(result.faults) / n);
    std::optional<CachesimRun> lcs;
    if (!dir.empty()) {
      lcs = RunCachesim(options.cachesim, dir,
                        fmt::format("zipf.oracleGeneral.bin oracleGeneral {} {} "
                                    "--ignore-obj-size 1 --num-thread 1",
                                    theirs, options.cache_size));
    }
    const double rate = n / seconds / 1e6;
    if (lcs) {
      const double wall_rate = n / lcs->seconds / 1e6;
      const bool exact = lcs->misses >= 0;
      const bool equal = exact ? lcs->misses == result.faults : lcs->miss_ratio == miss;
      fmt::print("{:<8} {:>10} {:>7} {:>8.2f} | {:>9} {:>7} {:>7.2f} {:>7.2f} | {:>5} {:>6.1f}x\n",
                 ours, result.faults, miss, rate,
                 exact ? fmt::format("{}", lcs->misses)
                       : fmt::format("~{:.0f}", std::stod(lcs->miss_ratio) * n),
                 lcs->miss_ratio, wall_rate, lcs->mqps, equal ? "yes" : "NO",
                 lcs->mqps > 0 ? rate / lcs->mqps : rate / wall_rate);
    } else {
      fmt::print("{:<8} {:>10} {:>7} {:>8.2f} | {:>9} {:>7} {:>7} {:>7} | {:>5} {:>7}\n", ours,
                 result.faults, miss, rate, "-", "-", "-", "-", "-", "-");
    }
  }
  if (startup) {
    fmt::print(
        "cachesim M req/s: 'wall' = requests / process wall time (start-up {:.2f} s with "
        "--num-req 1 included), 'loop' = its own printed throughput (simulation loop, reading "
        "records included); speedup = kvsim / loop (kvsim: replay only, ids densified before)\n",
        startup->seconds);
  }
  fmt::print(
      "cachesim counts: exact where it prints MISSES, else ~ miss ratio (4 decimals) x requests "
      "and 'equal' compares 4 decimals; lecar draws from time(NULL) in libCacheSim, so its "
      "counts agree in distribution only\n");
  fmt::print("load average: {:.2f} before, {:.2f} after (2 shared cores)\n", load_before,
             LoadAverage());
  if (!dir.empty()) std::filesystem::remove_all(dir);
}

}  // namespace kvsim::bench
