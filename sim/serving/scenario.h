#pragma once
// A serving scenario (sim/serving/README.md): traces, policies, workload, pool, scheduler and
// cost model, read from a TOML file and/or CLI flags. Lists of rates, capacities and policies
// make a sweep: every (policy, rate, capacity) combination is one cell.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "analysis/sweep.h"
#include "sim/serving/cost_model.h"
#include "sim/serving/scheduler.h"
#include "sim/serving/workload.h"

namespace kvsim::serving {

struct ServingScenario {
  std::vector<std::string> traces;  // trace files; a request replays one of them
  std::vector<analysis::PolicySpec> policies = {{"full", {}}};
  // Each policy's own budget (sim::Budget syntax, resolved per trace); absent = no budget of its
  // own: only the pool's share (on_full = evict) bounds what a sequence holds.
  std::optional<std::string> budget;
  WorkloadSpec workload;                  // workload.rate_per_s is overwritten per cell
  std::vector<double> rates = {1.0};      // requests per simulated second (poisson, gamma)
  std::vector<int64_t> capacities_bytes;  // KV pool sizes; required
  int block_tokens = 16;
  SchedulerConfig scheduler;
  CostModel cost;
  uint64_t seed = 0;  // replay seed (random policies); the workload has its own (workload.seed)
  int threads = 0;    // 0 = every core

  // Throws InputError naming `context`, the field and what was expected.
  void Validate(const std::string& context) const;
};

// Reads a scenario file. Relative paths (traces, workload file) are relative to its directory.
// Unknown keys are refused (a typo must not silently fall back to a default).
ServingScenario ReadScenarioFile(const std::filesystem::path& path);

// "64MiB", "512KiB", "2GiB", "4096B" or a plain integer number of bytes (> 0). Throws InputError
// naming `context`.
int64_t ParseBytes(const std::string& text, const std::string& context);

}  // namespace kvsim::serving
