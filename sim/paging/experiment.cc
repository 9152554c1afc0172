#include "sim/paging/experiment.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string_view>
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
  std::vector<EtaRow> eta;
  std::vector<EtaFitRow> eta_fit;
};

bool RunsEtaSweep(const ExperimentOptions& options) {
  return !options.eta0_rates.empty() || !options.eta1_rates.empty() ||
         !options.adversarial_budgets.empty();
}

// The per-type error sweep of one unit: for every prediction policy, perfect bits, then each
// eta0 rate, eta1 rate and adversarial budget, `seeds` replays each.
// Faults of policy `name` given prediction `bits`, offloading, with its own `seed`.
int64_t FaultsWithBits(const DenseRequests& dense,
                       const std::string& name,
                       int64_t cache_size,
                       uint64_t seed,
                       std::span<const uint8_t> bits) {
  auto policy = MakePagingPolicy(name);
  return Replay(dense, *policy,
                {.cache_size = cache_size, .mode = Mode::kOffload, .seed = seed, .bits = bits})
      .faults;
}

void RunEtaSweep(const RequestSequence& seq,
                 const DenseRequests& dense,
                 size_t stream_index,
                 int64_t cache_size,
                 int64_t opt_faults,
                 const ExperimentOptions& options,
                 UnitRows& out) {
  struct Model {
    const char* name;
    double rate;
  };
  std::vector<Model> models{{"perfect", 0.0}};
  for (double r : options.eta0_rates) models.push_back({"eta0", r});
  for (double r : options.eta1_rates) models.push_back({"eta1", r});
  for (double b : options.adversarial_budgets) models.push_back({"adversarial", b});
  for (const std::string& name : options.policies) {
    const PolicyInfo& info = FindPagingPolicy(name);
    if (info.predictions == Predictions::kNone) continue;
    const std::vector<uint8_t> truth = OracleBits(info.predictions, dense, cache_size);
    // Discard bits: 0 = keep; phase bits: 1 = "requested next phase", i.e. keep.
    const uint8_t keep_bit = info.predictions == Predictions::kPhase ? 1 : 0;
    const size_t first = out.eta.size();
    for (const Model& model : models) {
      NoisyBits adversarial;
      if (std::string_view(model.name) == "adversarial") {
        const auto budget =
            static_cast<int64_t>(std::floor(model.rate * static_cast<double>(dense.requests())));
        adversarial = AdversarialBits(dense, truth, keep_bit, cache_size, budget);
      }
      for (int64_t r = 0; r < options.seeds; ++r) {
        const uint64_t seed = options.seed + static_cast<uint64_t>(r);
        const std::string_view m = model.name;
        const NoisyBits noisy =
            m == "adversarial" ? adversarial
            : m == "eta0"      ? CorruptBitsByType(truth, model.rate, 0.0, seed, stream_index)
            : m == "eta1"      ? CorruptBitsByType(truth, 0.0, model.rate, seed, stream_index)
                               : NoisyBits{truth, 0, 0};
        // Randomized policies draw from a seed of their own per corruption seed, so the rows of
        // one model average over the policy's randomness too.
        const uint64_t policy_seed = DeriveSeed(DeriveSeed(seed, stream_index), 1);
        const int64_t faults = FaultsWithBits(dense, name, cache_size, policy_seed, noisy.bits);
        out.eta.push_back({.stream = seq.stream,
                           .semantics = options.semantics,
                           .policy = name,
                           .cache_size = cache_size,
                           .error_model = model.name,
                           .rate = model.rate,
                           .seed = seed,
                           .faults = faults,
                           .opt_faults = opt_faults,
                           .eta0 = noisy.eta0,
                           .eta1 = noisy.eta1});
      }
    }
    out.eta_fit.push_back(FitEtaRows(std::span(out.eta).subspan(first)));
  }
}

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
  if (RunsEtaSweep(options) && cache_size >= 1) {
    RunEtaSweep(seq, dense, stream_index, cache_size, belady_faults, options, out);
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
        const int64_t faults = FaultsWithBits(dense, name, cache_size, policy_seed, noisy.bits);
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
  for (const std::string& name : options.policies) {
    if (FindPagingPolicy(name).self_managed && options.semantics == Semantics::kStep) {
      ThrowInputError(
          "paging policy '{}' runs only under --semantics classic: it reports its own evictions "
          "(libCacheSim's bookkeeping), so with a step's pages pinned the cache could hold more "
          "than cache_size pages and its counts would not compare with the others' "
          "(sim/paging/README.md)",
          name);
    }
  }
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
  const std::pair<const std::vector<double>*, const char*> per_type[] = {
      {&options.eta0_rates, "--eta0-rates"},
      {&options.eta1_rates, "--eta1-rates"},
      {&options.adversarial_budgets, "--adversarial-budgets"}};
  for (const auto& [list, flag] : per_type) {
    for (double x : *list) {
      if (!(x >= 0 && x <= 1)) ThrowInputError("{}: {} is outside [0, 1]", flag, x);
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
      const auto& e = rows[s * sizes + c].eta;
      result.eta.insert(result.eta.end(), e.begin(), e.end());
      const auto& f = rows[s * sizes + c].eta_fit;
      result.eta_fit.insert(result.eta_fit.end(), f.begin(), f.end());
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

EtaFitRow FitEtaRows(std::span<const EtaRow> rows) {
  KVSIM_ASSERT(!rows.empty(), "FitEtaRows without rows");
  EtaFitRow fit{.stream = rows[0].stream,
                .semantics = rows[0].semantics,
                .policy = rows[0].policy,
                .cache_size = rows[0].cache_size,
                .opt_faults = rows[0].opt_faults};
  const double opt = static_cast<double>(fit.opt_faults);
  double perfect_sum = 0;
  int64_t perfect_n = 0;
  std::vector<double> x0, y0, x1, y1;
  fit.adversarial_worst_ratio = std::nan("");
  fit.adversarial_worst_budget = std::nan("");
  for (const EtaRow& r : rows) {
    KVSIM_ASSERT(r.stream == fit.stream && r.policy == fit.policy && r.cache_size == fit.cache_size,
                 "FitEtaRows: rows of several keys");
    const auto faults = static_cast<double>(r.faults);
    if (r.error_model == "perfect") {
      perfect_sum += faults;
      ++perfect_n;
    }
    if (r.error_model == "perfect" || r.error_model == "eta0") {
      x0.push_back(static_cast<double>(r.eta0));
      y0.push_back(faults);
    }
    if (r.error_model == "perfect" || r.error_model == "eta1") {
      x1.push_back(static_cast<double>(r.eta1));
      y1.push_back(faults);
    }
    if (r.error_model == "adversarial") {
      ++fit.adversarial_points;
      const double ratio = opt > 0 ? faults / opt : std::nan("");
      if (std::isnan(fit.adversarial_worst_ratio) || ratio > fit.adversarial_worst_ratio) {
        fit.adversarial_worst_ratio = ratio;
        fit.adversarial_worst_budget = r.rate;
      }
    }
  }
  fit.perfect_faults = perfect_n > 0 ? perfect_sum / static_cast<double>(perfect_n) : std::nan("");
  const LineFit f0 = FitLine(x0, y0), f1 = FitLine(x1, y1);
  fit.eta0_slope = f0.slope;
  fit.eta0_intercept = f0.intercept;
  fit.eta0_points = static_cast<int64_t>(x0.size());
  fit.eta1_slope = f1.slope;
  fit.eta1_intercept = f1.intercept;
  fit.eta1_points = static_cast<int64_t>(x1.size());
  return fit;
}

namespace {
// NaN (undefined) as an empty field.
std::string Field(double v) { return std::isnan(v) ? "" : fmt::format("{}", v); }
}  // namespace

void WriteEtaCsv(const std::filesystem::path& path, std::span<const EtaRow> rows) {
  AtomicTextFile file(path);
  auto& out = file.out();
  out << "stream,policy,cache_size,error_model,rate,seed,faults,opt_faults,competitive_ratio,"
         "eta0,eta1,semantics\n";
  for (const EtaRow& r : rows) {
    const double ratio = r.opt_faults > 0
                             ? static_cast<double>(r.faults) / static_cast<double>(r.opt_faults)
                             : std::nan("");
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{}\n", r.stream, r.policy, r.cache_size,
                       r.error_model, r.rate, r.seed, r.faults, r.opt_faults, Field(ratio), r.eta0,
                       r.eta1, SemanticsName(r.semantics));
  }
  file.Commit();
}

void WriteEtaFitCsv(const std::filesystem::path& path, std::span<const EtaFitRow> rows) {
  AtomicTextFile file(path);
  auto& out = file.out();
  out << "stream,policy,cache_size,opt_faults,perfect_faults,consistency_ratio,eta0_slope,"
         "eta0_intercept,eta0_points,eta1_slope,eta1_intercept,eta1_points,"
         "adversarial_worst_ratio,adversarial_worst_budget,adversarial_points,semantics\n";
  for (const EtaFitRow& r : rows) {
    const double consistency =
        r.opt_faults > 0 ? r.perfect_faults / static_cast<double>(r.opt_faults) : std::nan("");
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", r.stream, r.policy,
                       r.cache_size, r.opt_faults, Field(r.perfect_faults), Field(consistency),
                       Field(r.eta0_slope), Field(r.eta0_intercept), r.eta0_points,
                       Field(r.eta1_slope), Field(r.eta1_intercept), r.eta1_points,
                       Field(r.adversarial_worst_ratio), Field(r.adversarial_worst_budget),
                       r.adversarial_points, SemanticsName(r.semantics));
  }
  file.Commit();
}

}  // namespace kvsim::paging
