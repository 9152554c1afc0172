#pragma once
// `kvsim sweep` as a resumable job over units, on one process or the ranks of an MPI job
// (issue 12). analysis/sweep_units.h defines units and the journal; this file runs them:
//  1. rank 0 fingerprints the inputs, opens the journal (refusing one of other inputs) and reads
//     the cells already finished;
//  2. the remaining cells are cut into units, dealt longest first over the executor's ranks;
//  3. each finished unit is journaled on rank 0 as it arrives;
//  4. rank 0 assembles sweep.csv in plan order from the journal's and this run's rows, so the
//     file is byte-identical to a one-process run's, whatever the rank count, unit split or
//     number of interruptions.
// A failing unit (a corrupt trace) fails the sweep with a message naming the trace and unit, no
// final file written; with keep_going it is recorded in sweep.json ("failures"), the rest
// finishes, the outputs hold every other row, and the run still ends in InputError (exit 2).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/sweep.h"
#include "analysis/unit_executor.h"

namespace kvsim::analysis {

struct DistributedSweepOptions {
  std::filesystem::path out_dir;
  std::string command;  // recorded in sweep.json
  bool keep_going = false;
  // Cells per unit; 0 = automatic: every cell of a trace in one unit on one rank (the full-cache
  // pass computed once), else about four units per rank.
  int cells_per_unit = 0;
};

struct UnitFailure {
  std::string unit;  // UnitName
  std::string error;
};

struct DistributedSweepReport {
  int units_run = 0;      // units replayed by this run
  int cells_resumed = 0;  // (trace, cell) pairs read back from the journal
  int cells_total = 0;
  std::vector<UnitFailure> failures;
  int64_t bytes_received = 0;    // unit results sent to rank 0 by other ranks
  int64_t bytes_of_results = 0;  // every unit result of this run, encoded (the journal's bytes)
  double gather_seconds = 0.0;   // rank 0's time decoding and journaling results
  double wall_seconds = 0.0;
  bool wrote_outputs = false;  // rank 0, when every unit finished or keep_going
};

// Runs on every rank of `executor`. Throws InputError (rank 0) when a unit fails without
// keep_going, after the journal holds every unit that finished, or after writing the outputs
// when units failed with keep_going.
DistributedSweepReport RunDistributedSweep(const SweepPlan& plan,
                                           const DistributedSweepOptions& options,
                                           UnitExecutor& executor);

// Expands --trace arguments: a glob (*, ?, [) to its matches, sorted, without prompt-statistics
// sidecars (*.stats.h5); a list file (text, one
// path or glob per line, '#' comments, relative to the list's directory) to its entries; an
// HDF5 file (or anything else) stays as it is. A sidecar given beside its trace (a shell's
// expansion of dir/*.h5) is dropped. Throws InputError for a glob that matches nothing or a list
// that names none.
std::vector<std::string> ExpandTraceArguments(const std::vector<std::string>& arguments);

}  // namespace kvsim::analysis
