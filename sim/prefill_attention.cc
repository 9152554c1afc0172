#include "sim/prefill_attention.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace kvsim::sim {
namespace {

// Query rows per block of the causal column-sum pass: 128 rows x n keys of logits stay in cache
// for n up to a few thousand, and the product is large enough for Eigen's GEMM kernels.
constexpr int64_t kRowBlock = 128;

}  // namespace

PrefillAttention::PrefillAttention(const traces::LayerTensors& layer, int64_t prompt_len)
    : layer_(layer),
      prompt_len_(prompt_len),
      num_q_heads_(layer.queries.heads()),
      group_size_(layer.keys.heads() > 0 ? layer.queries.heads() / layer.keys.heads() : 1),
      column_sums_(static_cast<size_t>(num_q_heads_)),
      column_once_(new std::once_flag[static_cast<size_t>(num_q_heads_)]) {
  KVSIM_ASSERT(prompt_len >= 1 && prompt_len <= layer.queries.positions(),
               "prompt length {} outside [1, {}]", prompt_len, layer.queries.positions());
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
  std::call_once(column_once_[static_cast<size_t>(q_head)], [&] {
    const int64_t n = prompt_len_;
    const int d = layer_.queries.dim();
    const ConstMatrixMap queries(layer_.queries.Row(q_head, 0), n, d);
    const ConstMatrixMap keys = PromptKeys(q_head / group_size_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    Eigen::VectorXf sums = Eigen::VectorXf::Zero(n);
    RowMatrixXf logits;
    for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
      const int64_t r1 = std::min(n, r0 + kRowBlock);
      logits.noalias() = (queries.middleRows(r0, r1 - r0) * keys.topRows(r1).transpose()) * scale;
      for (int64_t i = r0; i < r1; ++i) {
        auto row = logits.row(i - r0).head(i + 1);
        const float max = row.maxCoeff();
        row = (row.array() - max).exp();
        row /= row.sum();
        sums.head(i + 1) += row.transpose();
      }
    }
    column_sums_[static_cast<size_t>(q_head)] = std::move(sums);
  });
  return column_sums_[static_cast<size_t>(q_head)];
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
