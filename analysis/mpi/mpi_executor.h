#pragma once
// Units over the ranks of an MPI job (built when CMake finds MPI: KVSIM_HAVE_MPI).
//
// Rank 0 coordinates and works: its main thread hands out units and receives results (the only
// thread that calls MPI: MPI_THREAD_FUNNELED), a second thread replays units like any other rank.
// Ranks ask for work when they start and with each result, so units are dealt dynamically in the
// caller's order (longest first). Results reach rank 0 as text (the unit's encoded rows).
//
// Faults: a rank that dies ends the job (mpirun and srun stop every rank when one exits
// abnormally). Rank 0 catches the SIGTERM they send, prints which units were in flight on which
// rank, and exits with status 2; the journal already holds every unit that finished.
#include <cstdint>
#include <memory>

#include "analysis/unit_executor.h"

namespace kvsim::analysis {

class MpiExecutor final : public UnitExecutor {
 public:
  // True when an MPI launcher (mpirun, mpiexec, srun) started this process.
  static bool LaunchedByMpi();

  MpiExecutor();            // MPI_Init_thread
  ~MpiExecutor() override;  // MPI_Finalize
  MpiExecutor(const MpiExecutor&) = delete;
  MpiExecutor& operator=(const MpiExecutor&) = delete;

  int rank() const override { return rank_; }
  int ranks() const override { return ranks_; }
  void Run(std::span<const std::string> tasks,
           const RunUnit& run,
           const UnitDone& done,
           const DescribeUnit& describe) override;
  int64_t bytes_received() const override { return bytes_received_; }
  // Ends every rank of the job with `code` (after rank 0 has printed why): before Run, by
  // telling the waiting ranks to stop; during Run, by MPI_Abort.
  [[noreturn]] void Abort(int code) override;

 private:
  void Coordinate(std::span<const std::string> tasks,
                  const RunUnit& run,
                  const UnitDone& done,
                  const DescribeUnit& describe);
  void Work(const RunUnit& run);

  int rank_ = 0;
  int ranks_ = 1;
  bool running_ = false;  // Run was called: units may be in flight
  int64_t bytes_received_ = 0;
  struct LocalWorker;
  std::unique_ptr<LocalWorker> local_;
};

}  // namespace kvsim::analysis
