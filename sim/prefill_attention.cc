#include "sim/prefill_attention.h"

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace kvsim::sim {
namespace {

// Query rows per block of the causal column-sum pass. 128 rows make each tile's GEMM large
// enough for Eigen's kernels (the query block is repacked once per tile: 1/kColumnTile of the
// multiply-adds), and the block's scratch is 128 x n floats (16 MiB at n = 32k).
constexpr int64_t kRowBlock = 128;
// Keys per column tile: a 128 x 512 float tile is 256 KiB, so the GEMM's output is still in L2
// when the softmax pass reads it back, and only the final weighted reduction reads the block's
// scratch from memory.
constexpr int64_t kColumnTile = 512;

}  // namespace

// Row block [r0, r1) sees keys [0, r1); per row i only keys [0, i] (causal). Tiles of keys past
// r1 are fully masked and never computed. The softmax is taken per tile (flash-attention style):
// each tile row keeps exp(logit - tile max) and its tile sum; once every tile of the row is
// known, P[i, j] = exp(logit - tile max) * exp(tile max - row max) / row sum, so each tile's
// column sums are one weighted reduction (tile^T * weights) instead of a pass per row. Row sums
// and the column-sum accumulator across row blocks are double: a 32k prompt adds 32k terms per
// column, where float would lose ~sqrt(n) ulps.
Eigen::VectorXf CausalColumnSums(const ConstMatrixMap& queries, const ConstMatrixMap& keys) {
  const int64_t n = queries.rows();
  KVSIM_ASSERT(keys.rows() == n && keys.cols() == queries.cols(),
               "queries {} x {} and keys {} x {} differ in shape", n, queries.cols(), keys.rows(),
               keys.cols());
  Eigen::VectorXd sums = Eigen::VectorXd::Zero(n);
  if (n == 0) return sums.cast<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(queries.cols()));
  const int64_t max_rows = std::min(n, kRowBlock);
  const int64_t max_tiles = (n + kColumnTile - 1) / kColumnTile;
  RowMatrixXf exps(max_rows, n);
  Eigen::MatrixXf tile_max(max_rows, max_tiles);
  Eigen::MatrixXf tile_sum(max_rows, max_tiles);
  Eigen::VectorXd row_max(max_rows);
  Eigen::VectorXd row_sum(max_rows);
  Eigen::VectorXf weights(max_rows);
  Eigen::RowVectorXf tile_columns(std::min(n, kColumnTile));
  constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

  for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
    const int64_t rows = std::min(n, r0 + kRowBlock) - r0;
    const int64_t width = r0 + rows;  // keys [0, r1)
    const int64_t tiles = (width + kColumnTile - 1) / kColumnTile;
    const auto block_queries = queries.middleRows(r0, rows);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t c0 = t * kColumnTile;
      const int64_t w = std::min(width, c0 + kColumnTile) - c0;
      auto tile = exps.block(0, c0, rows, w);
      tile.noalias() = (block_queries * keys.middleRows(c0, w).transpose()) * scale;
      for (int64_t k = 0; k < rows; ++k) {
        // Keys [c0, c0 + visible) are at or before query r0 + k.
        const int64_t visible = std::clamp<int64_t>(r0 + k + 1 - c0, 0, w);
        auto row = tile.row(k);
        if (visible == 0) {
          row.setZero();
          tile_max(k, t) = kMinusInf;
          tile_sum(k, t) = 0.0f;
          continue;
        }
        auto head = row.head(visible);
        const float max = head.maxCoeff();
        head = (head.array() - max).exp();
        row.tail(w - visible).setZero();
        tile_max(k, t) = max;
        tile_sum(k, t) = head.sum();
      }
    }
    for (int64_t k = 0; k < rows; ++k) {
      const auto maxima = tile_max.row(k).head(tiles);
      row_max[k] = static_cast<double>(maxima.maxCoeff());
      double total = 0.0;
      for (int64_t t = 0; t < tiles; ++t) {
        total += std::exp(static_cast<double>(maxima[t]) - row_max[k]) *
                 static_cast<double>(tile_sum(k, t));
      }
      row_sum[k] = total;
    }
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t c0 = t * kColumnTile;
      const int64_t w = std::min(width, c0 + kColumnTile) - c0;
      for (int64_t k = 0; k < rows; ++k) {
        weights[k] = static_cast<float>(std::exp(static_cast<double>(tile_max(k, t)) - row_max[k]) /
                                        row_sum[k]);
      }
      auto columns = tile_columns.head(w);
      columns.noalias() = weights.head(rows).transpose() * exps.block(0, c0, rows, w);
      sums.segment(c0, w) += columns.transpose().cast<double>();
    }
  }
  return sums.cast<float>();
}

std::vector<Eigen::VectorXf> ComputeColumnSums(const traces::LayerTensors& layer,
                                               int64_t prompt_len) {
  const int q_heads = layer.queries.heads();
  const int kv_heads = layer.keys.heads();
  KVSIM_ASSERT(kv_heads > 0 && q_heads % kv_heads == 0, "{} query heads over {} KV heads", q_heads,
               kv_heads);
  KVSIM_ASSERT(prompt_len >= 0 && prompt_len <= layer.queries.positions() &&
                   prompt_len <= layer.keys.positions(),
               "prompt length {} outside [0, {}]", prompt_len, layer.queries.positions());
  const int group = q_heads / kv_heads;
  const int d = layer.queries.dim();
  std::vector<Eigen::VectorXf> sums(static_cast<size_t>(q_heads));
  // Isolated: while this thread waits for the heads, it must not run an unrelated outer task
  // (e.g. another sweep cell that calls PrefillAttention::ColumnSums on this very object and
  // would block on its once_flag, held by this thread).
  tbb::this_task_arena::isolate([&] {
    tbb::parallel_for(0, q_heads, [&](int h) {
      const ConstMatrixMap queries(layer.queries.Row(h, 0), prompt_len, d);
      const ConstMatrixMap keys(layer.keys.Row(h / group, 0), prompt_len, d);
      sums[static_cast<size_t>(h)] = CausalColumnSums(queries, keys);
    });
  });
  return sums;
}

PrefillAttention::PrefillAttention(const traces::LayerTensors& layer, int64_t prompt_len)
    : layer_(layer),
      prompt_len_(prompt_len),
      num_q_heads_(layer.queries.heads()),
      group_size_(layer.keys.heads() > 0 ? layer.queries.heads() / layer.keys.heads() : 1) {
  KVSIM_ASSERT(prompt_len >= 1 && prompt_len <= layer.queries.positions(),
               "prompt length {} outside [1, {}]", prompt_len, layer.queries.positions());
}

PrefillAttention::PrefillAttention(const traces::LayerTensors& layer,
                                   int64_t prompt_len,
                                   std::vector<Eigen::VectorXf> column_sums)
    : PrefillAttention(layer, prompt_len) {
  SetColumnSums(std::move(column_sums));
}

void PrefillAttention::SetColumnSums(std::vector<Eigen::VectorXf> column_sums) {
  KVSIM_ASSERT(column_sums.size() == static_cast<size_t>(num_q_heads_),
               "{} column-sum vectors given, expected one per query head ({})", column_sums.size(),
               num_q_heads_);
  for (size_t h = 0; h < column_sums.size(); ++h) {
    KVSIM_ASSERT(column_sums[h].size() == prompt_len_,
                 "column sums of query head {} have length {}, expected prompt_len {}", h,
                 column_sums[h].size(), prompt_len_);
  }
  bool given = false;
  tbb::collaborative_call_once(column_once_, [&] {
    column_sums_ = std::move(column_sums);
    given = true;
    has_column_sums_ = true;
  });
  KVSIM_ASSERT(given, "SetColumnSums called after the column sums were computed or given");
}

ConstMatrixMap PrefillAttention::PromptKeys(int kv_head) const {
  return ConstMatrixMap(layer_.keys.Row(kv_head, 0), prompt_len_, layer_.keys.dim());
}

ConstMatrixMap PrefillAttention::PromptValues(int kv_head) const {
  return ConstMatrixMap(layer_.values.Row(kv_head, 0), prompt_len_, layer_.values.dim());
}

ConstMatrixMap PrefillAttention::PromptQueries(int q_head) const {
  return ConstMatrixMap(layer_.queries.Row(q_head, 0), prompt_len_, layer_.queries.dim());
}

const Eigen::VectorXf& PrefillAttention::ColumnSums(int q_head) const {
  KVSIM_ASSERT(q_head >= 0 && q_head < num_q_heads_, "query head {} out of range", q_head);
  tbb::collaborative_call_once(column_once_, [&] {
    column_sums_ = ComputeColumnSums(layer_, prompt_len_);
    has_column_sums_ = true;
  });
  return column_sums_[static_cast<size_t>(q_head)];
}

const Eigen::VectorXd& PrefillAttention::SharedStatistic(
    const std::string& key, const std::function<Eigen::VectorXd()>& compute) const {
  Statistic* statistic = nullptr;
  {
    const std::lock_guard lock(statistics_mutex_);
    std::unique_ptr<Statistic>& slot = statistics_[key];
    if (slot == nullptr) slot = std::make_unique<Statistic>();
    statistic = slot.get();
  }
  tbb::collaborative_call_once(statistic->once, [&] { statistic->value = compute(); });
  return statistic->value;
}

RowMatrixXf PrefillAttention::WindowAttention(int q_head, int64_t window) const {
  KVSIM_ASSERT(q_head >= 0 && q_head < num_q_heads_, "query head {} out of range", q_head);
  KVSIM_ASSERT(window >= 1 && window <= prompt_len_, "window {} outside [1, {}]", window,
               prompt_len_);
  const int64_t n = prompt_len_;
  const int d = layer_.queries.dim();
  const ConstMatrixMap queries(layer_.queries.Row(q_head, n - window), window, d);
  const ConstMatrixMap keys = PromptKeys(q_head / group_size_);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  RowMatrixXf weights = (queries * keys.transpose()) * scale;
  for (int64_t r = 0; r < window; ++r) {
    const int64_t visible = n - window + r + 1;
    auto row = weights.row(r);
    auto head = row.head(visible);
    const float max = head.maxCoeff();
    head = (head.array() - max).exp();
    head /= head.sum();
    row.tail(n - visible).setZero();
  }
  return weights;
}

}  // namespace kvsim::sim
