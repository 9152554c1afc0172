#include "analysis/distributed_sweep.h"

#include <fmt/format.h>
#include <glob.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "analysis/sweep_units.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/json_text.h"

namespace kvsim::analysis {
namespace {

// Test hooks, to simulate crashes deterministically (tests/analysis/distributed_sweep_*):
// KVSIM_TEST_KILL_AFTER_UNITS=N: rank 0 SIGKILLs itself after journaling N units;
// KVSIM_TEST_KILL_RANK=R:K: rank R SIGKILLs itself when it starts its K-th unit.
int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::atoi(value) : fallback;
}

struct KillRankHook {
  int rank = -1;
  int unit = 0;
  static KillRankHook FromEnvironment() {
    KillRankHook hook;
    if (const char* value = std::getenv("KVSIM_TEST_KILL_RANK")) {
      if (std::sscanf(value, "%d:%d", &hook.rank, &hook.unit) != 2) hook.rank = -1;
    }
    return hook;
  }
};

// Work of one cell on a trace, for longest-first scheduling (relative).
double CostPerCell(const nlohmann::json& trace) {
  if (trace.contains("unreadable")) return 0.0;
  const double prompt = trace.at("prompt_len").get<double>();
  const double total = trace.at("total_len").get<double>();
  // File bytes ~ layers x heads x T x d; the pass reads every prompt row once per decode step.
  return trace.value("bytes", 1.0) * (total - prompt + 1.0);
}

nlohmann::json Task(const SweepPlan& plan, const SweepUnit& unit) {
  return {{"path", plan.traces[static_cast<size_t>(unit.trace)]},
          {"trace", unit.trace},
          {"first_cell", unit.first_cell},
          {"num_cells", unit.num_cells}};
}

bool HasGlobCharacters(std::string_view text) {
  return text.find_first_of("*?[") != std::string_view::npos;
}

bool LooksLikeHdf5(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char signature[8] = {};
  in.read(signature, sizeof(signature));
  return in.gcount() == 8 &&
         std::string_view(signature, 8) == std::string_view("\x89HDF\r\n\x1a\n", 8);
}

bool LooksLikeText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(4096, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return head.find('\0') == std::string::npos;
}

std::vector<std::string> Glob(const std::string& pattern, const std::string& context) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
  std::vector<std::string> paths;
  if (rc == 0) {
    for (size_t i = 0; i < matches.gl_pathc; ++i) {
      const std::string_view match = matches.gl_pathv[i];
      // Prompt-statistics sidecars (TRACE.stats.h5, `kvsim stats`) sit beside their traces.
      if (!match.ends_with(".stats.h5")) paths.emplace_back(match);
    }
  }
  globfree(&matches);
  if (paths.empty()) ThrowInputError("{}: the pattern '{}' matches no file", context, pattern);
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

std::vector<std::string> ExpandTraceArguments(const std::vector<std::string>& arguments) {
  std::vector<std::string> traces;
  for (const std::string& argument : arguments) {
    const std::filesystem::path path(argument);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      if (HasGlobCharacters(argument)) {
        const std::vector<std::string> matches = Glob(argument, "--trace");
        traces.insert(traces.end(), matches.begin(), matches.end());
      } else {
        traces.push_back(argument);  // the reader names a missing file
      }
      continue;
    }
    if (LooksLikeHdf5(path) || !LooksLikeText(path)) {
      traces.push_back(argument);
      continue;
    }
    // A list file: one trace (or glob) per line.
    std::ifstream in(path);
    std::string line;
    size_t listed = 0;
    for (int number = 1; std::getline(in, line); ++number) {
      const size_t begin = line.find_first_not_of(" \t\r");
      if (begin == std::string::npos || line[begin] == '#') continue;
      const size_t end = line.find_last_not_of(" \t\r");
      std::filesystem::path entry = line.substr(begin, end - begin + 1);
      if (entry.is_relative()) entry = path.parent_path() / entry;
      const std::string context = fmt::format("--trace {} line {}", argument, number);
      if (!std::filesystem::exists(entry, ec) && HasGlobCharacters(entry.string())) {
        const std::vector<std::string> matches = Glob(entry.string(), context);
        traces.insert(traces.end(), matches.begin(), matches.end());
        listed += matches.size();
      } else {
        traces.push_back(entry.string());
        ++listed;
      }
    }
    if (listed == 0) {
      ThrowInputError("--trace {}: a list file (not HDF5) that names no trace", argument);
    }
  }
  // A shell-expanded `--trace dir/*.h5` brings each trace's prompt-statistics sidecar along.
  const std::set<std::string> given(traces.begin(), traces.end());
  std::erase_if(traces, [&](const std::string& path) {
    constexpr std::string_view kSidecar = ".stats.h5";
    return path.ends_with(kSidecar) &&
           given.contains(path.substr(0, path.size() - kSidecar.size()));
  });
  return traces;
}

DistributedSweepReport RunDistributedSweep(const SweepPlan& plan,
                                           const DistributedSweepOptions& options,
                                           UnitExecutor& executor) {
  const auto start = std::chrono::steady_clock::now();
  plan.Validate();
  const std::vector<CellKey> cells = PlanCells(plan);
  const int num_cells = static_cast<int>(cells.size());
  const int num_traces = static_cast<int>(plan.traces.size());
  DistributedSweepReport report;
  report.cells_total = num_cells * num_traces;

  // Every rank replays the tasks rank 0 deals; the plan (policies, budgets, options) comes from
  // each rank's own command line, the trace path from the task.
  const KillRankHook kill_hook = KillRankHook::FromEnvironment();
  int units_started_here = 0;
  const UnitExecutor::RunUnit run = [&](const std::string& task_text) {
    UnitOutcome outcome;
    try {
      const nlohmann::json task = nlohmann::json::parse(task_text);
      const SweepUnit unit{.trace = task.at("trace").get<int>(),
                           .first_cell = task.at("first_cell").get<int>(),
                           .num_cells = task.at("num_cells").get<int>()};
      if (++units_started_here == kill_hook.unit && executor.rank() == kill_hook.rank) {
        std::raise(SIGKILL);
      }
      const SweepResult result =
          RunSweepCells(plan, task.at("path").get<std::string>(), unit.first_cell, unit.num_cells);
      outcome.text = EncodeUnitRows(unit, result.table.rows());
    } catch (const InputError& e) {
      outcome = {UnitOutcome::Status::kInputError, e.what()};
    } catch (const InternalError& e) {
      outcome = {UnitOutcome::Status::kInternalError, e.what()};
    } catch (const std::exception& e) {
      outcome = {UnitOutcome::Status::kInputError, e.what()};
    }
    return outcome;
  };
  if (executor.rank() != 0) {
    executor.Run({}, run, {}, {});
    return report;
  }

  // Rank 0: what is finished, what is left.
  const nlohmann::json fingerprint = SweepFingerprint(plan);
  const SweepJournal journal(options.out_dir, fingerprint);
  FinishedCells finished = journal.Load();
  for (const auto& [key, rows] : finished) {
    if (key.first >= num_traces || key.second >= num_cells) {
      ThrowInputError("{}: a unit record names trace {} cell {}, outside this sweep's {} x {}",
                      journal.dir().string(), key.first, key.second, num_traces, num_cells);
    }
  }
  report.cells_resumed = static_cast<int>(finished.size());
  std::vector<double> cost_per_cell;
  std::set<int> unreadable;
  for (int t = 0; t < num_traces; ++t) {
    const nlohmann::json& trace = fingerprint.at("traces")[static_cast<size_t>(t)];
    cost_per_cell.push_back(CostPerCell(trace));
    if (trace.contains("unreadable")) unreadable.insert(t);
  }
  int cells_per_unit = options.cells_per_unit;
  if (cells_per_unit <= 0) {
    cells_per_unit = executor.ranks() == 1
                         ? num_cells
                         : std::clamp((num_cells * num_traces + 4 * executor.ranks() - 1) /
                                          (4 * executor.ranks()),
                                      1, num_cells);
  }
  std::vector<SweepUnit> units;
  for (const SweepUnit& unit :
       MakeUnits(num_traces, num_cells, cells_per_unit, cost_per_cell, finished)) {
    if (!unreadable.contains(unit.trace)) {
      units.push_back(unit);
      continue;
    }
    const std::string why = fingerprint.at("traces")[static_cast<size_t>(unit.trace)]
                                .at("unreadable")
                                .get<std::string>();
    if (!options.keep_going) {
      ThrowInputError("trace {} cannot be read ({}); no unit was run",
                      plan.traces[static_cast<size_t>(unit.trace)], why);
    }
    report.failures.push_back({UnitName(plan, cells, unit), why});
  }
  std::vector<std::string> tasks;
  std::vector<int> task_units;
  for (const int u : LongestFirst(units)) {
    tasks.push_back(JsonText(Task(plan, units[static_cast<size_t>(u)])));
    task_units.push_back(u);
  }
  const auto unit_of = [&](int task) -> const SweepUnit& {
    return units[static_cast<size_t>(task_units[static_cast<size_t>(task)])];
  };
  fmt::print(
      "sweep: {} traces x {} cells; {} cells from the journal, {} units to run on {} "
      "rank(s)\n",
      num_traces, num_cells, report.cells_resumed, tasks.size(), executor.ranks());
  std::fflush(stdout);

  const int kill_after_units = EnvInt("KVSIM_TEST_KILL_AFTER_UNITS", -1);
  std::optional<UnitOutcome> fatal;
  std::string fatal_unit;
  const UnitExecutor::UnitDone done = [&](int task, int rank, const UnitOutcome& outcome) {
    const SweepUnit& unit = unit_of(task);
    const std::string name = UnitName(plan, cells, unit);
    if (outcome.status != UnitOutcome::Status::kOk) {
      report.failures.push_back({name, outcome.text});
      fmt::print(stderr, "kvsim: unit {} failed on rank {}: {}\n", name, rank, outcome.text);
      if (options.keep_going) return true;
      fatal = outcome;
      fatal_unit = name;
      return false;
    }
    const auto gather_start = std::chrono::steady_clock::now();
    FinishedCells rows = DecodeUnitRows(outcome.text, fmt::format("rank {} result", rank));
    journal.Record(unit, outcome.text);
    finished.merge(rows);
    report.gather_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - gather_start).count();
    report.bytes_of_results += static_cast<int64_t>(outcome.text.size());
    ++report.units_run;
    fmt::print("[{}/{}] {} (rank {})\n", report.units_run, tasks.size(), name, rank);
    std::fflush(stdout);
    if (report.units_run == kill_after_units) std::raise(SIGKILL);
    return true;
  };
  executor.Run(tasks, run, done, [&](int task) { return UnitName(plan, cells, unit_of(task)); });
  report.bytes_received = executor.bytes_received();
  if (fatal) {
    const std::string message = fmt::format(
        "unit {} failed: {}. The journal ({}) holds the {} unit(s) that finished; fix the input "
        "and re-run the same command to finish the rest (or add --keep-going)",
        fatal_unit, fatal->text, journal.dir().string(), report.units_run);
    if (fatal->status == UnitOutcome::Status::kInternalError) throw InternalError(message);
    throw InputError(message);
  }

  // Assemble in plan order: trace by trace, cell by cell.
  SweepResult result;
  result.cells = cells;
  for (int t = 0; t < num_traces; ++t) {
    for (int c = 0; c < num_cells; ++c) {
      const auto it = finished.find({t, c});
      if (it == finished.end()) continue;  // a failed unit's cell (keep_going)
      for (const ResultRow& row : it->second) result.table.Add(row);
    }
  }
  report.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.wall_seconds = report.wall_seconds;
  SweepRunInfo info{
      .ranks = executor.ranks(), .cells_resumed = report.cells_resumed, .failures = {}};
  for (const UnitFailure& failure : report.failures) {
    info.failures.emplace_back(failure.unit, failure.error);
  }
  WriteSweepOutputs(options.out_dir, plan, result, options.command, info);
  report.wrote_outputs = true;
  if (!report.failures.empty()) {
    ThrowInputError(
        "{} unit(s) failed (listed in {}/sweep.json under 'failures'); sweep.csv holds every "
        "other cell. Fix the inputs and re-run the same command to finish",
        report.failures.size(), options.out_dir.string());
  }
  return report;
}

}  // namespace kvsim::analysis
