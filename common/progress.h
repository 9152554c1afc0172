#pragma once
// A one-line progress bar on stderr, drawn only when stderr is a terminal (so CI logs and
// redirected runs stay clean). Thread-safe: Advance() may be called from TBB workers.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace kvsim {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  ~ProgressBar();
  void Advance(int64_t n = 1);
  // Draws the final state and ends the line.
  void Finish();

 private:
  void Draw(int64_t done, bool force);

  std::string label_;
  int64_t total_;
  bool enabled_;
  std::atomic<int64_t> done_{0};
  std::mutex draw_mutex_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  bool finished_ = false;
};

}  // namespace kvsim
