// The prompt statistic's cost: causal column sums of a Llama-3-8B-shaped layer (32 query heads,
// 8 KV heads, d = 128) at n = 4096 and 8192 prompt tokens, with the blocked kernel
// (sim::CausalColumnSums) on one thread and over all query heads in parallel
// (sim::ComputeColumnSums), beside the row-by-row kernel it replaced (one thread, n = 4096 only
// unless `--old-all`) and an Eigen float GEMM measured in the same run with the same flags.
//
// FLOPs counted per head: n (n + 1) / 2 visible logits, each 2 d for q.k plus 5 for the softmax
// and the accumulation (subtract the max, exp, add to the row sum, multiply by the row weight,
// add to the column sum). Exp counts as one FLOP, so this understates the work a little.
// Prints figures; never asserts on time. The machine is shared: the load average is printed
// before and after.
#include <fmt/core.h>
#include <tbb/info.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "models/model_shape.h"
#include "sim/prefill_attention.h"
#include "sim/random_trace.h"

namespace {

using kvsim::ConstMatrixMap;
using kvsim::RowMatrixXf;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string line;
  std::getline(in, line);
  return line.empty() ? "unavailable" : line;
}

// The kernel before issue 11: 128-row blocks against every key up to the block's end, softmax
// and float accumulation row by row. Kept here only as the reference figure.
Eigen::VectorXf OldColumnSums(const ConstMatrixMap& queries, const ConstMatrixMap& keys) {
  const int64_t n = queries.rows();
  const float scale = 1.0f / std::sqrt(static_cast<float>(queries.cols()));
  Eigen::VectorXf sums = Eigen::VectorXf::Zero(n);
  RowMatrixXf logits;
  for (int64_t r0 = 0; r0 < n; r0 += 128) {
    const int64_t r1 = std::min<int64_t>(n, r0 + 128);
    logits.noalias() = (queries.middleRows(r0, r1 - r0) * keys.topRows(r1).transpose()) * scale;
    for (int64_t i = r0; i < r1; ++i) {
      auto row = logits.row(i - r0).head(i + 1);
      const float max = row.maxCoeff();
      row = (row.array() - max).exp();
      row /= row.sum();
      sums.head(i + 1) += row.transpose();
    }
  }
  return sums;
}

template <typename Kernel>
std::vector<Eigen::VectorXf> SerialOverHeads(const kvsim::traces::LayerTensors& layer,
                                             Kernel kernel) {
  const int group = layer.queries.heads() / layer.keys.heads();
  const int64_t n = layer.queries.positions();
  const int d = layer.queries.dim();
  std::vector<Eigen::VectorXf> sums;
  for (int h = 0; h < layer.queries.heads(); ++h) {
    sums.push_back(kernel(ConstMatrixMap(layer.queries.Row(h, 0), n, d),
                          ConstMatrixMap(layer.keys.Row(h / group, 0), n, d)));
  }
  return sums;
}

// The definition in double for one head: the reference both kernels are judged against.
Eigen::VectorXd DoubleColumnSums(const ConstMatrixMap& queries, const ConstMatrixMap& keys) {
  const Eigen::MatrixXd q = queries.cast<double>();
  const Eigen::MatrixXd k = keys.cast<double>();
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.cols()));
  Eigen::VectorXd sums = Eigen::VectorXd::Zero(q.rows());
  for (Eigen::Index i = 0; i < q.rows(); ++i) {
    Eigen::VectorXd w = (k.topRows(i + 1) * q.row(i).transpose()) * scale;
    w = (w.array() - w.maxCoeff()).exp();
    sums.head(i + 1) += w / w.sum();
  }
  return sums;
}

double MaxRelativeError(const Eigen::VectorXf& got, const Eigen::VectorXd& want) {
  return ((got.cast<double>() - want).array().abs() / want.array()).maxCoeff();
}

double MaxRelativeDifference(const std::vector<Eigen::VectorXf>& a,
                             const std::vector<Eigen::VectorXf>& b) {
  double worst = 0.0;
  for (size_t h = 0; h < a.size(); ++h) {
    for (Eigen::Index j = 0; j < a[h].size(); ++j) {
      const double x = a[h][j];
      const double y = b[h][j];
      worst = std::max(worst, std::abs(x - y) / std::max(std::abs(y), 1e-30));
    }
  }
  return worst;
}

// GFLOP/s of C = A * B^T, A m x k, B n x k (row-major, as queries times keys), repeated until
// at least half a second has passed.
double GemmGflops(int64_t m, int64_t n, int64_t k) {
  const RowMatrixXf a = RowMatrixXf::Random(m, k);
  const RowMatrixXf b = RowMatrixXf::Random(n, k);
  RowMatrixXf c(m, n);
  int reps = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0.0;
  do {
    c.noalias() = a * b.transpose();
    ++reps;
    seconds = Seconds(start);
  } while (seconds < 0.5);
  if (c(0, 0) == 12345.0f) fmt::print(" ");  // keep the product observable
  return 2.0 * static_cast<double>(m * n * k) * reps / seconds / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const bool old_all = argc > 1 && std::strcmp(argv[1], "--old-all") == 0;
  const kvsim::models::ModelShape shape =
      kvsim::models::WithLayers(kvsim::models::ShapePreset("llama-3-8b"), 1);
  fmt::print("prompt_stats_bench: {} (q_heads {}, kv_heads {}, d {}), {} threads\n", shape.name,
             shape.q_heads, shape.kv_heads, shape.head_dim, tbb::info::default_concurrency());
  fmt::print("load average before: {}\n", LoadAverage());
  fmt::print(
      "Eigen float GEMM, one thread: {:.1f} GFLOP/s (512 x 4096 x 128, the q.k shape), "
      "{:.1f} GFLOP/s (1024 x 1024 x 1024)\n",
      GemmGflops(512, 4096, shape.head_dim), GemmGflops(1024, 1024, 1024));

  for (const int64_t n : {int64_t{4096}, int64_t{8192}}) {
    const kvsim::traces::Trace trace = kvsim::sim::RandomTrace(shape, n, n, 1);
    const kvsim::traces::LayerTensors& layer = trace.layer(0);
    const double visible = static_cast<double>(n) * static_cast<double>(n + 1) / 2.0;
    const double gflop = visible * (2.0 * shape.head_dim + 5.0) * shape.q_heads / 1e9;

    auto start = std::chrono::steady_clock::now();
    const std::vector<Eigen::VectorXf> serial =
        SerialOverHeads(layer, kvsim::sim::CausalColumnSums);
    const double serial_s = Seconds(start);
    start = std::chrono::steady_clock::now();
    const std::vector<Eigen::VectorXf> parallel = kvsim::sim::ComputeColumnSums(layer, n);
    const double parallel_s = Seconds(start);
    fmt::print(
        "n = {}: {:.1f} GFLOP per layer; blocked kernel {:.2f} s on one thread ({:.1f} GFLOP/s), "
        "{:.2f} s over heads in parallel ({:.1f} GFLOP/s); parallel == serial bits: {}\n",
        n, gflop, serial_s, gflop / serial_s, parallel_s, gflop / parallel_s,
        MaxRelativeDifference(parallel, serial) == 0.0 ? "yes" : "NO");
    if (n == 4096 || old_all) {
      start = std::chrono::steady_clock::now();
      const std::vector<Eigen::VectorXf> old = SerialOverHeads(layer, OldColumnSums);
      const double old_s = Seconds(start);
      fmt::print(
          "n = {}: old row-by-row kernel {:.2f} s on one thread ({:.1f} GFLOP/s), {:.2f}x the "
          "blocked kernel's time; max relative difference old vs new {:.2e}\n",
          n, old_s, gflop / old_s, old_s / serial_s, MaxRelativeDifference(old, serial));
      const Eigen::VectorXd exact =
          DoubleColumnSums(ConstMatrixMap(layer.queries.Row(0, 0), n, shape.head_dim),
                           ConstMatrixMap(layer.keys.Row(0, 0), n, shape.head_dim));
      fmt::print(
          "n = {}: max relative error vs a double-precision reference (head 0): old {:.2e}, "
          "blocked {:.2e}\n",
          n, MaxRelativeError(old[0], exact), MaxRelativeError(serial[0], exact));
    }
  }
  fmt::print("load average after: {}\n", LoadAverage());
  return 0;
}
