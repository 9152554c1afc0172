#pragma once
// Request arrivals of a serving simulation (sim/serving/README.md): Poisson, bursty (gamma
// inter-arrival times) or read from a file. Every draw comes from one std::mt19937_64 seeded by
// the workload's seed, so a workload is identical on every machine and for any thread count.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvsim::serving {

struct ServingRequest {
  int64_t id = 0;          // 0-based, in arrival order
  double arrival_s = 0.0;  // simulated seconds
  int trace = 0;           // index into the scenario's trace set
};

struct WorkloadSpec {
  enum class Kind { kPoisson, kGamma, kFile };
  Kind kind = Kind::kPoisson;
  double rate_per_s = 1.0;  // mean arrivals per simulated second (poisson, gamma)
  // Coefficient of variation of the gamma inter-arrival times (1 = Poisson, > 1 = bursty):
  // shape k = 1 / cv^2, scale = 1 / (rate k).
  double cv = 1.0;
  int64_t num_requests = 16;  // poisson, gamma
  uint64_t seed = 0;
  // "random" (uniform over the trace set, from the seed) or "cycle" (request i takes trace
  // i mod n) for generated arrivals; a file names its trace per row.
  std::string trace_choice = "random";
  std::filesystem::path file;  // kFile: CSV with columns arrival_s,trace (trace = name)

  // Throws InputError naming `context` and the field for a value out of range.
  void Validate(const std::string& context) const;
};

const char* WorkloadKindName(WorkloadSpec::Kind kind);  // "poisson" / "gamma" / "file"
WorkloadSpec::Kind ParseWorkloadKind(const std::string& text, const std::string& context);

// The requests in arrival order (ties keep file order). `trace_names` are the trace set's names
// (file basenames without extension) for a file's `trace` column. Throws InputError for a bad
// file (naming it, the line and the column) or an unknown trace name.
std::vector<ServingRequest> MakeRequests(const WorkloadSpec& spec,
                                         const std::vector<std::string>& trace_names);

}  // namespace kvsim::serving
