#include "analysis/mpi/mpi_executor.h"

#include <fmt/format.h>
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::analysis {
namespace {

constexpr int kTagReady = 1;   // rank -> 0: give me a task (first message)
constexpr int kTagResult = 2;  // rank -> 0: "index status\n" + outcome text; give me the next
constexpr int kTagTask = 3;    // 0 -> rank: "index\n" + task text; index -1 = no more work

std::atomic<int> g_stop_signal{0};
extern "C" void RecordStopSignal(int signal) { g_stop_signal.store(signal); }

void SendText(const std::string& text, int destination, int tag) {
  KVSIM_ASSERT(text.size() < (size_t{1} << 31), "MPI message of {} bytes", text.size());
  MPI_Send(text.data(), static_cast<int>(text.size()), MPI_BYTE, destination, tag, MPI_COMM_WORLD);
}

// Receives the message `status` describes (after a probe).
std::string ReceiveProbed(const MPI_Status& status) {
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  std::string text(static_cast<size_t>(count), '\0');
  MPI_Recv(text.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD,
           MPI_STATUS_IGNORE);
  return text;
}

// "first line\nrest": the integers of the first line and the rest.
std::pair<std::string, std::string> SplitHeader(const std::string& message) {
  const size_t newline = message.find('\n');
  KVSIM_ASSERT(newline != std::string::npos, "MPI message without a header line");
  return {message.substr(0, newline), message.substr(newline + 1)};
}

}  // namespace

// Rank 0's own worker thread: takes one task at a time from the coordinator.
struct MpiExecutor::LocalWorker {
  std::thread thread;
  std::mutex mutex;
  std::condition_variable wake;
  int task = -1;  // assigned and not yet taken
  bool quit = false;
  std::deque<std::pair<int, UnitOutcome>> finished;
};

bool MpiExecutor::LaunchedByMpi() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"}) {
    if (std::getenv(variable) != nullptr) return true;
  }
  return false;
}

MpiExecutor::MpiExecutor() {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks_);
}

MpiExecutor::~MpiExecutor() {
  if (local_ && local_->thread.joinable()) {
    {
      std::lock_guard lock(local_->mutex);
      local_->quit = true;
    }
    local_->wake.notify_all();
    local_->thread.join();
  }
  MPI_Finalize();
}

void MpiExecutor::Abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (rank_ == 0 && !running_) {
    // Nothing was dealt yet (bad input found by rank 0): every other rank is waiting for its
    // first task. Tell each to stop, so the job ends with `code` and without MPI_Abort's noise.
    for (int rank = 1; rank < ranks_; ++rank) {
      MPI_Status status;
      MPI_Probe(rank, kTagReady, MPI_COMM_WORLD, &status);
      ReceiveProbed(status);
      SendText("-1\n", rank, kTagTask);
    }
    MPI_Finalize();
    std::exit(code);
  }
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void MpiExecutor::Run(std::span<const std::string> tasks,
                      const RunUnit& run,
                      const UnitDone& done,
                      const DescribeUnit& describe) {
  running_ = true;
  if (rank_ == 0) {
    Coordinate(tasks, run, done, describe);
  } else {
    Work(run);
  }
}

void MpiExecutor::Work(const RunUnit& run) {
  SendText("", 0, kTagReady);
  while (true) {
    MPI_Status status;
    MPI_Probe(0, kTagTask, MPI_COMM_WORLD, &status);
    const auto [header, task] = SplitHeader(ReceiveProbed(status));
    const int index = std::stoi(header);
    if (index < 0) return;
    const UnitOutcome outcome = run(task);
    SendText(fmt::format("{} {}\n", index, static_cast<int>(outcome.status)) + outcome.text, 0,
             kTagResult);
  }
}

void MpiExecutor::Coordinate(std::span<const std::string> tasks,
                             const RunUnit& run,
                             const UnitDone& done,
                             const DescribeUnit& describe) {
  // mpirun / srun stop every rank with SIGTERM when one dies or the job is cancelled: say which
  // units were lost instead of vanishing.
  const auto previous_term = std::signal(SIGTERM, RecordStopSignal);
  const auto previous_int = std::signal(SIGINT, RecordStopSignal);

  const int num_tasks = static_cast<int>(tasks.size());
  int next = 0;
  std::map<int, int> in_flight;  // rank -> task
  int remote_workers = ranks_ - 1;

  local_ = std::make_unique<LocalWorker>();
  LocalWorker& local = *local_;
  local.thread = std::thread([&local, &run, tasks] {
    while (true) {
      int task = -1;
      {
        std::unique_lock lock(local.mutex);
        local.wake.wait(lock, [&] { return local.quit || local.task >= 0; });
        if (local.task < 0) return;
        task = std::exchange(local.task, -1);
      }
      UnitOutcome outcome = run(tasks[static_cast<size_t>(task)]);
      std::lock_guard lock(local.mutex);
      local.finished.emplace_back(task, std::move(outcome));
    }
  });
  const auto give_local = [&] {
    if (next >= num_tasks) return;
    in_flight[0] = next;
    {
      std::lock_guard lock(local.mutex);
      local.task = next++;
    }
    local.wake.notify_all();
  };
  const auto give_remote = [&](int rank) {
    if (next < num_tasks) {
      in_flight[rank] = next;
      SendText(fmt::format("{}\n", next) + tasks[static_cast<size_t>(next)], rank, kTagTask);
      ++next;
    } else {
      SendText("-1\n", rank, kTagTask);
      --remote_workers;
    }
  };
  const auto stop_for_signal = [&](int signal) {
    std::string lost;
    for (const auto& [rank, task] : in_flight) {
      lost += fmt::format("\n  rank {}: {}", rank, describe(task));
    }
    fmt::print(stderr,
               "kvsim: error: signal {} stopped the MPI job (a rank died, or the job was "
               "cancelled). Units in flight, not finished:{}\nThe journal holds every unit that "
               "finished; re-run the same command to finish the rest.\n",
               signal, lost.empty() ? std::string(" none") : lost);
    std::fflush(stderr);
    RemoveTemporaryFiles();
    std::_Exit(2);
  };

  give_local();
  while (next < num_tasks || !in_flight.empty() || remote_workers > 0) {
    if (const int signal = g_stop_signal.load(); signal != 0) stop_for_signal(signal);
    bool progressed = false;
    int flag = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status);
    if (flag != 0) {
      progressed = true;
      const int source = status.MPI_SOURCE;
      const int tag = status.MPI_TAG;
      const std::string message = ReceiveProbed(status);
      if (tag == kTagResult) {
        bytes_received_ += static_cast<int64_t>(message.size());
        const auto [header, text] = SplitHeader(message);
        int index = -1;
        int code = 0;
        KVSIM_ASSERT(std::sscanf(header.c_str(), "%d %d", &index, &code) == 2,
                     "bad result header '{}' from rank {}", header, source);
        in_flight.erase(source);
        if (!done(index, source,
                  UnitOutcome{.status = static_cast<UnitOutcome::Status>(code), .text = text})) {
          return;
        }
      }
      give_remote(source);
    }
    std::deque<std::pair<int, UnitOutcome>> finished;
    {
      std::lock_guard lock(local.mutex);
      finished.swap(local.finished);
    }
    for (auto& [task, outcome] : finished) {
      progressed = true;
      in_flight.erase(0);
      if (!done(task, 0, outcome)) return;
      give_local();
    }
    if (!progressed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard lock(local.mutex);
    local.quit = true;
  }
  local.wake.notify_all();
  local.thread.join();
  std::signal(SIGTERM, previous_term);
  std::signal(SIGINT, previous_int);
}

}  // namespace kvsim::analysis
