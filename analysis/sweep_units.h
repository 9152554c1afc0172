#pragma once
// Units and the journal of a distributed, resumable sweep (issue 12).
//
// A sweep's work is every (trace, cell) pair. A unit is one trace and a run of consecutive cells
// (PlanCells order); RunSweepCells replays it on any rank, in any order, because a cell's rows do
// not depend on the other cells. Why not (trace, layer) units: the `all` row's percentiles pool
// the samples of every layer (~0.8 MB per cell and layer at 32 heads x 2k decode steps), which a
// layer unit would have to ship; a cell unit ships its finished rows (~2 KB per cell) and pays
// for its own full-cache pass, which is small beside the cells' own attention in a sweep.
//
// The journal (OUT/sweep.journal/) holds one file per finished unit, written atomically, and
// plan.json, the fingerprint of the command and of the traces. A re-run of the same command
// reads the finished cells back and schedules only the rest; a different command or a changed
// trace is refused, naming what differs.
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "analysis/result_table.h"
#include "analysis/sweep.h"

namespace kvsim::analysis {

struct SweepUnit {
  int trace = 0;       // index into SweepPlan::traces
  int first_cell = 0;  // index into PlanCells(plan)
  int num_cells = 0;
  double cost = 0.0;  // estimated work, for longest-first scheduling
};

// Rows of finished cells by (trace, cell): each the cell's per-layer rows then its `all` row.
using FinishedCells = std::map<std::pair<int, int>, std::vector<ResultRow>>;

// Cuts each trace's cells that are not in `finished` into units: maximal runs of consecutive
// unfinished cells, each cut into pieces of at most `cells_per_unit` (>= 1). The split depends
// only on its arguments (not on the rank count). cost = cost_per_cell[trace] * num_cells.
std::vector<SweepUnit> MakeUnits(int num_traces,
                                 int num_cells,
                                 int cells_per_unit,
                                 std::span<const double> cost_per_cell,
                                 const FinishedCells& finished);
// Unit indices by decreasing cost; equal costs keep their order.
std::vector<int> LongestFirst(std::span<const SweepUnit> units);
// "t.h5 cells 3-5 (h2o 64 .. h2o 0.5p)": how errors and progress name a unit.
std::string UnitName(const SweepPlan& plan, std::span<const CellKey> cells, const SweepUnit& unit);

// A finished unit's rows as text (JSON; every double as a hex float, so the rows read back are
// bit-identical): the journal's file contents and the message a rank sends to rank 0.
std::string EncodeUnitRows(const SweepUnit& unit, const std::vector<ResultRow>& rows);
// Decodes EncodeUnitRows' text into per-cell rows. Throws InputError naming `what` (a file or a
// rank) if the text is not a unit record.
FinishedCells DecodeUnitRows(std::string_view text, const std::string& what);

// The identity of a sweep's inputs: the kvsim version, every trace's path, size, modification
// time and header (shape, lengths, source), the cells, and every option that changes numbers.
// Reads each trace's header; a trace that cannot be read gets {"path", "unreadable": why}.
nlohmann::json SweepFingerprint(const SweepPlan& plan);

class SweepJournal {
 public:
  // Opens OUT/sweep.journal, creating it. If it exists, its plan.json must hold the same command
  // and the same traces, except traces of which no cell finished; else InputError names the
  // first difference and how to start afresh. Then plan.json = `fingerprint`.
  SweepJournal(const std::filesystem::path& out_dir, const nlohmann::json& fingerprint);
  const std::filesystem::path& dir() const { return dir_; }
  // Every finished cell recorded so far (reads the unit files).
  FinishedCells Load() const;
  // Records a finished unit (its EncodeUnitRows text), atomically.
  void Record(const SweepUnit& unit, const std::string& encoded_rows) const;

 private:
  void CheckSameInputs(const nlohmann::json& was, const nlohmann::json& now) const;

  std::filesystem::path dir_;
};

}  // namespace kvsim::analysis
