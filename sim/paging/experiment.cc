#include "sim/paging/experiment.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <type_traits>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/progress.h"
#include "sim/paging/evict_optimum.h"
#include "sim/paging/predictions.h"
#include "sim/paging/registry.h"

namespace kvsim::paging {
namespace {

struct Unit {
  size_t stream = 0;
  size_t size_index = 0;
};

// Everything one (stream, cache size) unit produces.
struct UnitRows {
  std::vector<MrcRow> mrc;
  std::vector<PredictionRow> predictions;
};

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

UnitRows RunUnit(const RequestSequence& seq,
                 const DenseRequests& dense,
                 size_t stream_index,
                 int64_t cache_size,
                 const std::vector<int64_t>& evict_opt,
                 const ExperimentOptions& options) {
  UnitRows out;
  // Belady in offload mode gives opt_faults and, when asked for, the offload `opt` row: run once.
  int64_t belady_faults = 0;
  double belady_seconds = 0;
  {
    auto belady = MakePagingPolicy("opt");
    const auto start = Clock::now();
    belady_faults =
        Replay(dense, *belady,
               {.cache_size = cache_size, .mode = Mode::kOffload, .seed = 0, .bits = {}})
            .faults;
    belady_seconds = SecondsSince(start);
  }
  const uint64_t policy_seed = DeriveSeed(options.seed, stream_index);
  for (Mode mode : options.modes) {
    const int64_t opt =
        mode == Mode::kOffload ? belady_faults : evict_opt[static_cast<size_t>(cache_size)];
    for (const std::string& name : options.policies) {
      const PolicyInfo& info = FindPagingPolicy(name);
      int64_t faults = opt;
      double seconds = name == "opt" && mode == Mode::kOffload ? belady_seconds : 0.0;
      if (name != "opt") {
        const std::vector<uint8_t> bits =
            cache_size >= 1 ? OracleBits(info.predictions, dense, cache_size)
                            : std::vector<uint8_t>(
                                  info.predictions == Predictions::kNone ? 0 : dense.page.size());
        auto policy = MakePagingPolicy(name);
        const auto start = Clock::now();
        faults = Replay(dense, *policy,
                        {.cache_size = cache_size, .mode = mode, .seed = policy_seed, .bits = bits})
                     .faults;
        seconds = SecondsSince(start);
      }
      out.mrc.push_back({.stream = seq.stream,
                         .semantics = options.semantics,
                         .mode = mode,
                         .policy = name,
                         .cache_size = cache_size,
                         .requests = dense.requests(),
                         .faults = faults,
                         .opt_faults = opt,
                         .fetched_bytes = mode == Mode::kOffload ? faults * seq.page_bytes : 0,
                         .seconds = seconds});
    }
  }
  if (options.error_rates.empty() || cache_size < 1) return out;
  for (const std::string& name : options.policies) {
    const PolicyInfo& info = FindPagingPolicy(name);
    if (info.predictions == Predictions::kNone) continue;
    const std::vector<uint8_t> truth = OracleBits(info.predictions, dense, cache_size);
    for (double rate : options.error_rates) {
      for (int64_t r = 0; r < options.seeds; ++r) {
        const uint64_t seed = options.seed + static_cast<uint64_t>(r);
        const NoisyBits noisy = CorruptBits(truth, rate, seed, stream_index);
        auto policy = MakePagingPolicy(name);
        const int64_t faults = Replay(dense, *policy,
                                      {.cache_size = cache_size,
                                       .mode = Mode::kOffload,
                                       .seed = policy_seed,
                                       .bits = noisy.bits})
                                   .faults;
        out.predictions.push_back({.stream = seq.stream,
                                   .semantics = options.semantics,
                                   .policy = name,
                                   .cache_size = cache_size,
                                   .error_rate = rate,
                                   .seed = seed,
                                   .faults = faults,
                                   .opt_faults = belady_faults,
                                   .eta0 = noisy.eta0,
                                   .eta1 = noisy.eta1});
      }
    }
  }
  return out;
}

}  // namespace

ExperimentResult RunExperiment(std::span<const RequestSequence> streams,
                               const ExperimentOptions& input_options) {
  // A policy or mode named twice (e.g. `opt,belady`) runs once.
  ExperimentOptions options = input_options;
  auto dedupe = [](auto& list) {
    std::decay_t<decltype(list)> unique;
    for (const auto& x : list) {
      if (std::find(unique.begin(), unique.end(), x) == unique.end()) unique.push_back(x);
    }
    list = std::move(unique);
  };
  dedupe(options.policies);
  dedupe(options.modes);
  for (const std::string& name : options.policies) FindPagingPolicy(name);
  if (!options.stream_cache_sizes.empty() && options.stream_cache_sizes.size() != streams.size()) {
    throw InternalError("RunExperiment: stream_cache_sizes needs one list per stream");
  }
  std::vector<std::vector<int64_t>> sizes_of(streams.size());
  for (size_t s = 0; s < streams.size(); ++s) {
    sizes_of[s] =
        options.stream_cache_sizes.empty() ? options.cache_sizes : options.stream_cache_sizes[s];
    if (sizes_of[s].size() != sizes_of[0].size()) {
      throw InternalError("RunExperiment: every stream needs the same number of cache sizes");
    }
    for (int64_t size : sizes_of[s]) {
      if (size < 0) ThrowInputError("--cache-sizes: size {} is negative, expected >= 0", size);
    }
  }
  for (double rate : options.error_rates) {
    if (!(rate >= 0 && rate <= 1)) {
      ThrowInputError("--error-rates: rate {} is outside [0, 1]", rate);
    }
  }
  if (options.seeds < 1) ThrowInputError("--seeds {}: expected >= 1", options.seeds);
  const bool evict =
      std::find(options.modes.begin(), options.modes.end(), Mode::kEvict) != options.modes.end();

  const size_t sizes = streams.empty() ? 0 : sizes_of[0].size();
  auto max_size_of = [&](size_t s) {
    return sizes_of[s].empty() ? int64_t{0}
                               : *std::max_element(sizes_of[s].begin(), sizes_of[s].end());
  };
  std::vector<DenseRequests> dense(streams.size());
  std::vector<std::vector<int64_t>> evict_opt(streams.size());
  int64_t flow_slots = 0;
  for (size_t s = 0; s < streams.size(); ++s) flow_slots += evict ? max_size_of(s) : 0;
  {
    // The flow optimum dominates long evict runs: its bar counts augmented slots.
    ProgressBar flow_progress("evict optimum (min-cost flow), slots", flow_slots,
                              options.progress && evict);
    tbb::parallel_for(size_t{0}, streams.size(), [&](size_t s) {
      dense[s] = Densify(streams[s]);
      if (options.semantics == Semantics::kClassic) {
        dense[s] = OneRequestPerStep(std::move(dense[s]));
      }
      if (evict) {
        evict_opt[s] = EvictOptimumCurve(dense[s], max_size_of(s),
                                         [&](int64_t n) { flow_progress.Advance(n); });
      }
    });
    flow_progress.Finish();
  }
  ProgressBar progress("paging replays, (stream, size) units",
                       static_cast<int64_t>(streams.size() * sizes), options.progress);
  std::vector<Unit> units;
  for (size_t s = 0; s < streams.size(); ++s) {
    for (size_t c = 0; c < sizes; ++c) units.push_back({s, c});
  }
  std::vector<UnitRows> rows(units.size());
  tbb::parallel_for(size_t{0}, units.size(), [&](size_t u) {
    const Unit& unit = units[u];
    rows[u] = RunUnit(streams[unit.stream], dense[unit.stream], unit.stream,
                      sizes_of[unit.stream][unit.size_index], evict_opt[unit.stream], options);
    progress.Advance();
  });
  progress.Finish();

  // Units are stream-major, size-minor; the MRC wants mode and policy before size.
  ExperimentResult result;
  const size_t per_unit = options.modes.size() * options.policies.size();
  for (size_t s = 0; s < streams.size(); ++s) {
    for (size_t k = 0; k < per_unit; ++k) {
      for (size_t c = 0; c < sizes; ++c) result.mrc.push_back(rows[s * sizes + c].mrc[k]);
    }
    for (size_t c = 0; c < sizes; ++c) {
      const auto& p = rows[s * sizes + c].predictions;
      result.predictions.insert(result.predictions.end(), p.begin(), p.end());
    }
  }
  return result;
}

const char* SemanticsName(Semantics semantics) {
  return semantics == Semantics::kClassic ? "classic" : "step";
}

Semantics ParseSemantics(const std::string& text, const std::string& context) {
  if (text == "step") return Semantics::kStep;
  if (text == "classic") return Semantics::kClassic;
  ThrowInputError(
      "{} '{}': expected step (a step's pages pinned as one set) or classic (one "
      "request after another, as libCacheSim)",
      context, text);
}

DenseRequests OneRequestPerStep(DenseRequests dense) {
  dense.step_begin.resize(dense.page.size() + 1);
  for (size_t i = 0; i < dense.step_begin.size(); ++i) {
    dense.step_begin[i] = static_cast<int64_t>(i);
  }
  return dense;
}

void WriteMrcCsv(const std::filesystem::path& path, std::span<const MrcRow> rows) {
  AtomicTextFile file(path);
  auto& out = file.out();
  out << "stream,mode,policy,cache_size,requests,faults,miss_ratio,opt_faults,competitive_ratio,"
         "fetched_bytes,semantics,requests_per_second\n";
  for (const MrcRow& r : rows) {
    const std::string miss_ratio =
        r.requests > 0
            ? fmt::format("{}", static_cast<double>(r.faults) / static_cast<double>(r.requests))
            : "";
    const std::string ratio =
        r.opt_faults > 0
            ? fmt::format("{}", static_cast<double>(r.faults) / static_cast<double>(r.opt_faults))
            : "";
    const std::string rate =
        r.seconds > 0 ? fmt::format("{:.0f}", static_cast<double>(r.requests) / r.seconds) : "";
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{}\n", r.stream, ModeName(r.mode),
                       r.policy, r.cache_size, r.requests, r.faults, miss_ratio, r.opt_faults,
                       ratio, r.fetched_bytes, SemanticsName(r.semantics), rate);
  }
  file.Commit();
}

void WritePredictionsCsv(const std::filesystem::path& path, std::span<const PredictionRow> rows) {
  AtomicTextFile file(path);
  auto& out = file.out();
  out << "stream,policy,cache_size,error_rate,seed,faults,opt_faults,eta0,eta1,semantics\n";
  for (const PredictionRow& r : rows) {
    out << fmt::format("{},{},{},{},{},{},{},{},{},{}\n", r.stream, r.policy, r.cache_size,
                       r.error_rate, r.seed, r.faults, r.opt_faults, r.eta0, r.eta1,
                       SemanticsName(r.semantics));
  }
  file.Commit();
}

}  // namespace kvsim::paging
