#include "analysis/full_attention_stream.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace kvsim::analysis {
namespace {

// The k positions of largest weight among row[0, visible), by decreasing weight, ties to the lower
// position: one scan keeping a sorted buffer. Positions arrive in increasing order, so an entry
// equal to the buffer's last weight never displaces it: the same result as partial_sort with
// that comparator, in O(visible) for the common case of a rejected candidate.
void TopK(const float* row, int64_t visible, int64_t k, int64_t* out) {
  std::vector<std::pair<float, int64_t>> best;
  best.reserve(static_cast<size_t>(k) + 1);
  for (int64_t j = 0; j < visible; ++j) {
    const float w = row[j];
    if (static_cast<int64_t>(best.size()) == k && !(w > best.back().first)) continue;
    auto at = std::upper_bound(
        best.begin(), best.end(), w,
        [](float value, const std::pair<float, int64_t>& e) { return value > e.first; });
    best.insert(at, {w, j});
    if (static_cast<int64_t>(best.size()) > k) best.pop_back();
  }
  for (size_t i = 0; i < best.size(); ++i) out[i] = best[i].second;
}

}  // namespace

FullAttentionStream::FullAttentionStream(const traces::LayerTensors& layer,
                                         int64_t prompt_len,
                                         const Options& options)
    : layer_(layer),
      prompt_len_(prompt_len),
      total_len_(layer.queries.positions()),
      num_q_heads_(layer.queries.heads()),
      group_size_(layer.keys.heads() > 0 ? layer.queries.heads() / layer.keys.heads() : 1),
      head_dim_(layer.queries.dim()),
      scale_(1.0f / std::sqrt(static_cast<float>(layer.queries.dim()))),
      future_mass_group_(options.future_mass_group) {
  KVSIM_ASSERT(prompt_len >= 1 && prompt_len <= total_len_, "prompt length {} outside [1, {}]",
               prompt_len, total_len_);
  const int64_t steps = total_len_ - prompt_len_;
  int64_t block = options.block_steps;
  if (block <= 0) {
    const double row_bytes = 2.0 * sizeof(float) * static_cast<double>(num_q_heads_) *
                             static_cast<double>(std::max<int64_t>(total_len_, 1));
    block = std::clamp<int64_t>(
        static_cast<int64_t>(static_cast<double>(options.memory_bytes) / row_bytes), kMinBlockSteps,
        kMaxBlockSteps);
  }
  block_steps_ = std::max<int64_t>(1, std::min(block, steps));
  first_block_steps_ =
      std::min(std::max(block_steps_, kMinFirstBlockSteps), std::max<int64_t>(steps, 1));
  buffer_rows_ = std::max(block_steps_, first_block_steps_);
  const auto heads = static_cast<size_t>(num_q_heads_);
  logits_.resize(heads);
  weights_.resize(heads);
  outputs_.resize(heads);
  if (steps > 0) {
    for (size_t h = 0; h < heads; ++h) {
      logits_[h].resize(buffer_rows_, total_len_);
      weights_[h].resize(buffer_rows_, total_len_);
      outputs_[h].resize(buffer_rows_, head_dim_);
    }
  }
  top_.assign(heads * static_cast<size_t>(buffer_rows_) * kMaxTopK, -1);
  total_mass_.assign(heads * static_cast<size_t>(buffer_rows_), 0.0);
  if (future_mass_group_ > 0) ComputeFutureMass();
}

int64_t FullAttentionStream::num_blocks() const {
  const int64_t steps = total_len_ - prompt_len_;
  if (steps <= 0) return 0;
  if (steps <= first_block_steps_) return 1;
  return 1 + (steps - first_block_steps_ + block_steps_ - 1) / block_steps_;
}

int64_t FullAttentionStream::BlockEnd(int64_t block) const {
  return std::min(total_len_, BlockBegin(block) + (block == 0 ? first_block_steps_ : block_steps_));
}

double FullAttentionStream::PassFlops() const {
  double visible = 0.0;
  for (int64_t t = prompt_len_; t < total_len_; ++t) visible += static_cast<double>(t + 1);
  return 4.0 * num_q_heads_ * visible * head_dim_;
}

void FullAttentionStream::ComputeWeights(int q_head, int64_t begin, int64_t end) {
  const int64_t rows = end - begin;
  const ConstMatrixMap queries = layer_.queries.Head(q_head);
  const ConstMatrixMap keys = layer_.keys.Head(q_head / group_size_);
  RowMatrixXf& logits = logits_[static_cast<size_t>(q_head)];
  RowMatrixXf& weights = weights_[static_cast<size_t>(q_head)];
  // Causal: the block's last query sees keys [0, end); the rest of a row is masked below.
  logits.topLeftCorner(rows, end).noalias() =
      (queries.middleRows(begin, rows) * keys.topRows(end).transpose()) * scale_;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t visible = begin + r + 1;
    auto row = weights.row(r);
    auto head = row.head(visible);
    head = logits.row(r).head(visible);
    const float max = head.maxCoeff();
    head = (head.array() - max).exp();
    head /= head.sum();
    row.segment(visible, end - visible).setZero();
  }
}

void FullAttentionStream::ComputeFutureMass() {
  const int groups = num_q_heads_ / future_mass_group_;
  KVSIM_ASSERT(groups * future_mass_group_ == num_q_heads_,
               "future-mass group {} does not divide {} query heads", future_mass_group_,
               num_q_heads_);
  future_mass_.assign(static_cast<size_t>(groups),
                      std::vector<double>(static_cast<size_t>(total_len_), 0.0));
  tbb::parallel_for(0, groups, [&](int group) {
    std::vector<double>& mass = future_mass_[static_cast<size_t>(group)];
    const int first = group * future_mass_group_;
    for (int64_t block = 0; block < num_blocks(); ++block) {
      const int64_t begin = BlockBegin(block);
      const int64_t end = BlockEnd(block);
      for (int h = first; h < first + future_mass_group_; ++h) ComputeWeights(h, begin, end);
      // Step-major, then head: the order FullCacheAttention::FutureMass adds in.
      for (int64_t r = 0; r < end - begin; ++r) {
        for (int h = first; h < first + future_mass_group_; ++h) {
          const float* w = weights_[static_cast<size_t>(h)].row(r).data();
          for (int64_t j = 0; j <= begin + r; ++j) mass[static_cast<size_t>(j)] += w[j];
        }
      }
    }
  });
  begin_ = end_ = 0;  // the buffers hold the last block's weights but no logits contract: stale
}

void FullAttentionStream::ComputeBlock(int64_t block) {
  KVSIM_ASSERT(block >= 0 && block < num_blocks(), "block {} outside [0, {})", block, num_blocks());
  const int64_t begin = BlockBegin(block);
  const int64_t end = BlockEnd(block);
  tbb::parallel_for(0, num_q_heads_, [&](int h) {
    ComputeWeights(h, begin, end);
    const int64_t rows = end - begin;
    const RowMatrixXf& weights = weights_[static_cast<size_t>(h)];
    const ConstMatrixMap values = layer_.values.Head(h / group_size_);
    outputs_[static_cast<size_t>(h)].topRows(rows).noalias() =
        weights.topLeftCorner(rows, end) * values.topRows(end);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = begin + r + 1;
      const float* w = weights.row(r).data();
      double total = 0.0;
      for (int64_t j = 0; j < visible; ++j) total += static_cast<double>(w[j]);
      const size_t index =
          static_cast<size_t>(h) * static_cast<size_t>(buffer_rows_) + static_cast<size_t>(r);
      total_mass_[index] = total;
      int64_t* top = top_.data() + index * kMaxTopK;
      std::fill(top, top + kMaxTopK, -1);
      TopK(w, visible, std::min<int64_t>(kMaxTopK, visible), top);
    }
  });
  begin_ = begin;
  end_ = end;
}

int64_t FullAttentionStream::RowOf(int q_head, int64_t step) const {
  KVSIM_ASSERT(q_head >= 0 && q_head < num_q_heads_ && step >= begin_ && step < end_,
               "no full attention for head {} step {}: the current block is [{}, {})", q_head, step,
               begin_, end_);
  return step - begin_;
}

std::span<const float> FullAttentionStream::FullAttention(int q_head, int64_t step) const {
  const int64_t r = RowOf(q_head, step);
  return {weights_[static_cast<size_t>(q_head)].row(r).data(), static_cast<size_t>(step + 1)};
}

std::span<const float> FullAttentionStream::Logits(int q_head, int64_t step) const {
  const int64_t r = RowOf(q_head, step);
  return {logits_[static_cast<size_t>(q_head)].row(r).data(), static_cast<size_t>(step + 1)};
}

std::vector<double> FullAttentionStream::FutureMass(int first_q_head, int num_q_heads) const {
  KVSIM_ASSERT(future_mass_group_ > 0 && num_q_heads == future_mass_group_ &&
                   first_q_head % future_mass_group_ == 0,
               "future mass was computed for groups of {} query heads, not [{}, +{})",
               future_mass_group_, first_q_head, num_q_heads);
  return future_mass_[static_cast<size_t>(first_q_head / future_mass_group_)];
}

double FullAttentionStream::TotalMass(int q_head, int64_t step) const {
  const int64_t r = RowOf(q_head, step);
  return total_mass_[static_cast<size_t>(q_head) * static_cast<size_t>(buffer_rows_) +
                     static_cast<size_t>(r)];
}

Eigen::Map<const Eigen::RowVectorXf> FullAttentionStream::Output(int q_head, int64_t step) const {
  const int64_t r = RowOf(q_head, step);
  return Eigen::Map<const Eigen::RowVectorXf>(outputs_[static_cast<size_t>(q_head)].row(r).data(),
                                              head_dim_);
}

std::span<const int64_t> FullAttentionStream::TopPositions(int q_head, int64_t step) const {
  const int64_t r = RowOf(q_head, step);
  const size_t index =
      (static_cast<size_t>(q_head) * static_cast<size_t>(buffer_rows_) + static_cast<size_t>(r)) *
      kMaxTopK;
  return {top_.data() + index, static_cast<size_t>(std::min<int64_t>(kMaxTopK, step + 1))};
}

}  // namespace kvsim::analysis
