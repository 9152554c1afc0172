#pragma once
// What every benchmark prints beside its figures: wall and process CPU time, and the load
// average (the machines are shared, so a figure without the load is not comparable).
#include <chrono>
#include <ctime>
#include <fstream>

namespace kvsim::bench {

// Wall-clock and process CPU seconds since construction.
class Timer {
 public:
  double wall_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_).count();
  }
  double cpu_s() const { return static_cast<double>(std::clock() - cpu_) / CLOCKS_PER_SEC; }

 private:
  std::chrono::steady_clock::time_point wall_ = std::chrono::steady_clock::now();
  std::clock_t cpu_ = std::clock();
};

// The 1-minute load average, or -1 where /proc/loadavg is missing.
inline double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1.0;
  in >> load;
  return load;
}

}  // namespace kvsim::bench
