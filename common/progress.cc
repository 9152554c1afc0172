#include "common/progress.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace kvsim {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      enabled_(enabled && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (enabled_ && !finished_) std::fputc('\n', stderr);
}

void ProgressBar::Advance(int64_t n) {
  const int64_t done = done_.fetch_add(n) + n;
  if (enabled_) Draw(done, done >= total_);
}

void ProgressBar::Finish() {
  if (!enabled_ || finished_) return;
  Draw(total_, true);
  std::fputc('\n', stderr);
  finished_ = true;
}

void ProgressBar::Draw(int64_t done, bool force) {
  std::lock_guard<std::mutex> lock(draw_mutex_);
  const auto now = std::chrono::steady_clock::now();
  // Redrawing more often than 10 times a second only costs time.
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  constexpr int kWidth = 30;
  const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
  const int filled = static_cast<int>(frac * kWidth);
  const double secs = std::chrono::duration<double>(now - start_).count();
  fmt::print(stderr, "\r{} [{}{}] {}/{} {:.1f}s", label_, std::string(filled, '#'),
             std::string(kWidth - filled, '.'), std::min(done, total_), total_, secs);
  std::fflush(stderr);
}

}  // namespace kvsim
