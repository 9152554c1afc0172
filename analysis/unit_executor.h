#pragma once
// Where the units of a distributed sweep run: this process (LocalExecutor) or the ranks of an MPI
// job (MpiExecutor, built when CMake finds MPI; analysis/mpi_executor.h). An executor moves
// opaque text: a task (what to compute) to a rank, the outcome back to rank 0. What a task means
// and how results are assembled is the sweep's business (analysis/distributed_sweep.h).
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace kvsim::analysis {

struct UnitOutcome {
  enum class Status { kOk, kInputError, kInternalError };
  Status status = Status::kOk;
  std::string text;  // the unit's encoded result, or the error message
};

class UnitExecutor {
 public:
  // Computes one task wherever it is scheduled.
  using RunUnit = std::function<UnitOutcome(const std::string& task)>;
  // Called on rank 0 for each finished task (its index in `tasks`), in completion order, with the
  // rank that ran it. Returning false stops the run: no task starts after that.
  using UnitDone = std::function<bool(int task, int rank, const UnitOutcome& outcome)>;
  // How a task is named in messages (rank 0 only).
  using DescribeUnit = std::function<std::string(int task)>;

  virtual ~UnitExecutor() = default;
  virtual int rank() const = 0;
  virtual int ranks() const = 0;
  // Runs `tasks` (given on rank 0; other ranks pass none and receive theirs), dynamically: each
  // rank takes the next task when it is free, so list long tasks first. Returns on every rank once
  // all tasks are done, or on rank 0 as soon as `done` says stop.
  virtual void Run(std::span<const std::string> tasks,
                   const RunUnit& run,
                   const UnitDone& done,
                   const DescribeUnit& describe) = 0;
  // Bytes of task outcomes that crossed between processes (0 for a local run).
  virtual int64_t bytes_received() const { return 0; }
  // After a failure that rank 0 has reported: ends every other rank too (MPI_Abort). A local run
  // has nothing to end and returns.
  virtual void Abort(int /*code*/) {}
};

// One process: the tasks one after another, in order.
class LocalExecutor final : public UnitExecutor {
 public:
  int rank() const override { return 0; }
  int ranks() const override { return 1; }
  void Run(std::span<const std::string> tasks,
           const RunUnit& run,
           const UnitDone& done,
           const DescribeUnit& /*describe*/) override {
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (!done(static_cast<int>(i), 0, run(tasks[i]))) return;
    }
  }
};

}  // namespace kvsim::analysis
