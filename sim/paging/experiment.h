#pragma once
// Paging experiments over request streams (`kvsim paging`): a miss-ratio curve per policy and
// mode with the offline optimum beside it, and the prediction-error sweep of the one-bit
// policies. Rows follow analysis/RESULTS_FORMAT.md (paging_mrc.csv, paging_predictions.csv).
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "sim/paging/engine.h"
#include "sim/paging/request_sequence.h"

namespace kvsim::paging {

// How the requests of one decode step are served (sim/paging/README.md):
//  - kStep: as one set: pages the step already requested are pinned until it ends, and a page
//    that finds every resident page pinned bypasses the cache (the KV-cache view);
//  - kClassic: one after another, as a sequential cache simulator (libCacheSim) serves them: no
//    pinning, no bypass. Implemented by giving every request its own step.
enum class Semantics { kStep, kClassic };
const char* SemanticsName(Semantics semantics);
Semantics ParseSemantics(const std::string& text, const std::string& context);
// `dense` with every request in a step of its own (kClassic).
DenseRequests OneRequestPerStep(DenseRequests dense);

struct ExperimentOptions {
  std::vector<int64_t> cache_sizes;  // pages, each >= 0
  // When not empty: the cache sizes of stream s (one list per stream, all of the same length),
  // used instead of cache_sizes (sizes given as fractions or bytes resolve per stream).
  std::vector<std::vector<int64_t>> stream_cache_sizes;
  Semantics semantics = Semantics::kStep;
  std::vector<std::string> policies;  // registered names
  // Evict mode also runs the min-cost-flow optimum (evict_optimum.h), far slower than a replay.
  std::vector<Mode> modes{Mode::kOffload};
  std::vector<double> error_rates;  // empty: no prediction sweep
  // The per-type error sweep (EtaRow): flip probabilities of true-1 bits to 0 (eta0) and of
  // true-0 bits to 1 (eta1), and adversarial budgets as fractions of the requests (errors =
  // floor(fraction * requests), placed by AdversarialBits). Any of them non-empty runs the sweep
  // for every prediction policy, perfect bits included.
  std::vector<double> eta0_rates;
  std::vector<double> eta1_rates;
  std::vector<double> adversarial_budgets;
  int64_t seeds = 1;      // corruption seeds seed, seed+1, ... per error rate
  uint64_t seed = 1;      // base seed (rmarker draws and bit corruption)
  bool progress = false;  // a progress bar on stderr (drawn only on a terminal)
};

struct MrcRow {
  std::string stream;
  Semantics semantics = Semantics::kStep;
  Mode mode = Mode::kOffload;
  std::string policy;
  int64_t cache_size = 0;
  int64_t requests = 0;
  int64_t faults = 0;
  int64_t opt_faults = 0;
  int64_t fetched_bytes = 0;
  // Wall-clock seconds of this row's replay (a timing, not a result: it varies from run to run;
  // 0 when nothing was replayed for the row, e.g. the flow optimum's evict `opt` row).
  double seconds = 0;
};

struct PredictionRow {
  std::string stream;
  Semantics semantics = Semantics::kStep;
  std::string policy;
  int64_t cache_size = 0;
  double error_rate = 0;
  uint64_t seed = 0;
  int64_t faults = 0;
  int64_t opt_faults = 0;
  int64_t eta0 = 0;
  int64_t eta1 = 0;
};

// One replay of the per-type error sweep (offload mode).
struct EtaRow {
  std::string stream;
  Semantics semantics = Semantics::kStep;
  std::string policy;
  int64_t cache_size = 0;
  std::string error_model;  // perfect, eta0, eta1 or adversarial
  double rate = 0;          // flip probability of the model's type; adversarial: budget fraction
  uint64_t seed = 0;        // corruption seed (adversarial bits ignore it; randomized policies not)
  int64_t faults = 0;
  int64_t opt_faults = 0;
  int64_t eta0 = 0;  // realized errors
  int64_t eta1 = 0;
};

// One (stream, policy, cache size) of the per-type sweep summarized. Slopes are least-squares
// fits of faults against the realized error count over the perfect and that type's rows (extra
// faults per error); NaN with fewer than two distinct counts. Ratios are over opt_faults (NaN if
// OPT made no fault).
struct EtaFitRow {
  std::string stream;
  Semantics semantics = Semantics::kStep;
  std::string policy;
  int64_t cache_size = 0;
  int64_t opt_faults = 0;
  double perfect_faults = 0;  // mean over seeds
  double eta0_slope = 0, eta0_intercept = 0;
  int64_t eta0_points = 0;
  double eta1_slope = 0, eta1_intercept = 0;
  int64_t eta1_points = 0;
  double adversarial_worst_ratio = 0;   // max over adversarial rows of faults / opt_faults
  double adversarial_worst_budget = 0;  // its budget fraction
  int64_t adversarial_points = 0;
};

struct ExperimentResult {
  std::vector<MrcRow> mrc;                 // stream, mode, policy, cache size order
  std::vector<PredictionRow> predictions;  // stream, cache size, policy, rate, seed order
  std::vector<EtaRow> eta;                 // stream, cache size, policy, model, rate, seed order
  std::vector<EtaFitRow> eta_fit;          // stream, cache size, policy order
};

// In offload mode "opt" is Belady; in evict mode the "opt" row and every opt_faults is the
// min-cost-flow optimum (evict_optimum.h). Prediction policies in the MRC get exact (oracle)
// bits. Runs (stream, cache size) units in parallel; results do not depend on the thread count.
// Throws InputError for an unknown policy or a negative cache size / bad error rate.
ExperimentResult RunExperiment(std::span<const RequestSequence> streams,
                               const ExperimentOptions& options);

void WriteMrcCsv(const std::filesystem::path& path, std::span<const MrcRow> rows);
void WritePredictionsCsv(const std::filesystem::path& path, std::span<const PredictionRow> rows);
void WriteEtaCsv(const std::filesystem::path& path, std::span<const EtaRow> rows);
void WriteEtaFitCsv(const std::filesystem::path& path, std::span<const EtaFitRow> rows);
// Summarizes the rows of one (stream, policy, cache size), all of the same key.
EtaFitRow FitEtaRows(std::span<const EtaRow> rows);

}  // namespace kvsim::paging
