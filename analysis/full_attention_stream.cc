#include "analysis/full_attention_stream.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "common/error.h"
#include "common/huge_pages.h"

namespace kvsim::analysis {
namespace {

// The k positions of largest weight among row[0, visible), by decreasing weight, ties to the lower
// position (a total order, so the result is unique): one scan keeping a sorted buffer. Positions
// arrive in increasing order, so an entry equal to the buffer's last weight never displaces it.
//
// Pruned first: with the row cut into chunks of 64, the k-th largest chunk maximum tau is at most
// the k-th largest weight (k chunks each hold a weight >= tau), so every top-k weight is >= tau and
// lies in a chunk whose maximum is >= tau. Only those chunks are scanned, only their weights >= tau
// offered: a few hundred of a row's thousands, as attention is peaked.
void TopK(const float* row, int64_t visible, int64_t k, int64_t* out) {
  constexpr int64_t kChunk = 64;
  using Chunk = Eigen::Map<const Eigen::Array<float, kChunk, 1>>;
  const int64_t whole_chunks = visible / kChunk;
  float tau = -std::numeric_limits<float>::infinity();
  if (whole_chunks >= 4 * k) {
    thread_local std::vector<float> maxima;
    maxima.resize(static_cast<size_t>(whole_chunks));
    for (int64_t c = 0; c < whole_chunks; ++c) {
      maxima[static_cast<size_t>(c)] = Chunk(row + c * kChunk).maxCoeff();
    }
    std::nth_element(maxima.begin(), maxima.begin() + (k - 1), maxima.end(), std::greater<>());
    tau = maxima[static_cast<size_t>(k - 1)];
  }
  std::vector<std::pair<float, int64_t>> best;
  best.reserve(static_cast<size_t>(k) + 1);
  for (int64_t chunk = 0; chunk < visible; chunk += kChunk) {
    const int64_t chunk_end = std::min(visible, chunk + kChunk);
    if (chunk_end - chunk == kChunk && Chunk(row + chunk).maxCoeff() < tau) continue;
    for (int64_t j = chunk; j < chunk_end; ++j) {
      const float w = row[j];
      if (w < tau) continue;
      if (static_cast<int64_t>(best.size()) == k && !(w > best.back().first)) continue;
      auto at = std::upper_bound(
          best.begin(), best.end(), w,
          [](float value, const std::pair<float, int64_t>& e) { return value > e.first; });
      best.insert(at, {w, j});
      if (static_cast<int64_t>(best.size()) > k) best.pop_back();
    }
  }
  for (size_t i = 0; i < best.size(); ++i) out[i] = best[i].second;
}

// Sum of row[0, n) in double, eight independent partial sums (vectorisable; a total mass is ~1,
// so the order changes it by ~1e-16 at most).
double SumInDouble(const float* row, int64_t n) {
  double partial[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int lane = 0; lane < 8; ++lane) partial[lane] += static_cast<double>(row[j + lane]);
  }
  for (; j < n; ++j) partial[0] += static_cast<double>(row[j]);
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

}  // namespace

FullAttentionStream::FullAttentionStream(const traces::LayerTensors& layer,
                                         int64_t prompt_len,
                                         const Options& options,
                                         Workspace* workspace)
    : layer_(layer),
      prompt_len_(prompt_len),
      total_len_(layer.queries.positions()),
      num_q_heads_(layer.queries.heads()),
      num_groups_(std::max(layer.keys.heads(), 1)),
      group_size_(layer.keys.heads() > 0 ? layer.queries.heads() / layer.keys.heads() : 1),
      head_dim_(layer.queries.dim()),
      scale_(1.0f / std::sqrt(static_cast<float>(layer.queries.dim()))),
      future_mass_group_(options.future_mass_group),
      workspace_(workspace != nullptr ? workspace : &own_workspace_) {
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
  KVSIM_ASSERT(group_size_ * num_groups_ == num_q_heads_, "{} query heads in {} KV groups",
               num_q_heads_, num_groups_);
  for (Slot& slot : workspace_->slots) slot.block = -1;
  if (future_mass_group_ > 0) ComputeFutureMass();
}

void FullAttentionStream::PrepareSlot(Slot& slot) const {
  const auto groups = static_cast<size_t>(num_groups_);
  slot.queries.resize(groups);
  slot.logits.resize(groups);
  slot.weights.resize(groups);
  slot.outputs.resize(groups);
  const int64_t group_rows = group_size_ * buffer_rows_;
  const auto grow = [](RowMatrixXf& m, int64_t rows, int64_t cols) {
    // Keep the allocation when it is large enough: only the leading block is used.
    if (m.rows() * m.cols() < rows * cols || m.cols() != cols) {
      m.resize(rows, cols);
      AdviseHugePages(m.data(), static_cast<size_t>(m.size()) * sizeof(float));
    }
  };
  for (size_t g = 0; g < groups; ++g) {
    grow(slot.queries[g], group_rows, head_dim_);
    grow(slot.logits[g], group_rows, total_len_);
    grow(slot.weights[g], group_rows, total_len_);
    grow(slot.outputs[g], group_rows, head_dim_);
  }
  const auto heads = static_cast<size_t>(num_q_heads_);
  slot.top.resize(heads * static_cast<size_t>(buffer_rows_) * kMaxTopK);
  slot.total_mass.resize(heads * static_cast<size_t>(buffer_rows_));
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

void FullAttentionStream::ComputeGroup(
    Slot& slot, int group, int64_t begin, int64_t end, bool measure) const {
  const int64_t rows = end - begin;
  const int64_t group_rows = group_size_ * rows;
  const auto g = static_cast<size_t>(group);
  RowMatrixXf& queries = slot.queries[g];
  RowMatrixXf& logits = slot.logits[g];
  RowMatrixXf& weights = slot.weights[g];
  for (int i = 0; i < group_size_; ++i) {
    queries.middleRows(i * rows, rows) =
        layer_.queries.Head(group * group_size_ + i).middleRows(begin, rows);
  }
  // Causal: the block's last query sees keys [0, end); the rest of a row is masked below. The
  // scale is a factor of the left operand, which Eigen hands to the GEMM as its alpha: the logits
  // come out scaled with no extra pass (and no temporary, which `(Q K^T) * scale` would make).
  logits.topLeftCorner(group_rows, end).noalias() =
      (scale_ * queries.topRows(group_rows)) * layer_.keys.Head(group).topRows(end).transpose();
  for (int64_t row = 0; row < group_rows; ++row) {
    const int64_t r = row % rows;
    const int64_t visible = begin + r + 1;
    const auto logit_row = logits.row(row).head(visible);
    auto weight_row = weights.row(row);
    auto head = weight_row.head(visible);
    const float max = logit_row.maxCoeff();
    head = (logit_row.array() - max).exp();
    head /= head.sum();
    weight_row.segment(visible, end - visible).setZero();
    if (!measure) continue;
    // The row is still in cache: its total mass and top positions now, not in another pass.
    const int h = group * group_size_ + static_cast<int>(row / rows);
    const size_t index =
        static_cast<size_t>(h) * static_cast<size_t>(buffer_rows_) + static_cast<size_t>(r);
    slot.total_mass[index] = SumInDouble(weight_row.data(), visible);
    int64_t* top = slot.top.data() + index * kMaxTopK;
    std::fill(top, top + kMaxTopK, -1);
    TopK(weight_row.data(), visible, std::min<int64_t>(kMaxTopK, visible), top);
  }
  if (measure) {
    slot.outputs[g].topRows(group_rows).noalias() =
        weights.topLeftCorner(group_rows, end) * layer_.values.Head(group).topRows(end);
  }
}

void FullAttentionStream::ComputeFutureMass() {
  const int streams = num_q_heads_ / future_mass_group_;
  KVSIM_ASSERT(
      streams * future_mass_group_ == num_q_heads_ && group_size_ % future_mass_group_ == 0,
      "future-mass group {} does not divide the GQA group of {} ({} query heads)",
      future_mass_group_, group_size_, num_q_heads_);
  future_mass_.assign(static_cast<size_t>(streams),
                      std::vector<double>(static_cast<size_t>(total_len_), 0.0));
  Slot& slot = workspace_->slots[0];
  PrepareSlot(slot);
  slot.block = -1;  // the pass leaves the buffers holding no whole block
  tbb::parallel_for(0, num_groups_, [&](int group) {
    const RowMatrixXf& weights = slot.weights[static_cast<size_t>(group)];
    for (int64_t block = 0; block < num_blocks(); ++block) {
      const int64_t begin = BlockBegin(block);
      const int64_t end = BlockEnd(block);
      const int64_t rows = end - begin;
      ComputeGroup(slot, group, begin, end, /*measure=*/false);
      for (int first = 0; first < group_size_; first += future_mass_group_) {
        const int stream = (group * group_size_ + first) / future_mass_group_;
        std::vector<double>& mass = future_mass_[static_cast<size_t>(stream)];
        // Step-major, then head: the order FullCacheAttention::FutureMass adds in.
        for (int64_t r = 0; r < rows; ++r) {
          for (int i = first; i < first + future_mass_group_; ++i) {
            const float* w = weights.row(i * rows + r).data();
            for (int64_t j = 0; j <= begin + r; ++j) mass[static_cast<size_t>(j)] += w[j];
          }
        }
      }
    }
  });
}

int64_t FullAttentionStream::BlockOf(int64_t step) const {
  KVSIM_ASSERT(step >= prompt_len_ && step < total_len_, "step {} is not a decode step of [{}, {})",
               step, prompt_len_, total_len_);
  const int64_t past_first = step - prompt_len_ - first_block_steps_;
  return past_first < 0 ? 0 : 1 + past_first / block_steps_;
}

void FullAttentionStream::ComputeBlock(int64_t block) {
  KVSIM_ASSERT(block >= 0 && block < num_blocks(), "block {} outside [0, {})", block, num_blocks());
  Slot& slot = workspace_->slots[block % 2];
  PrepareSlot(slot);
  const int64_t begin = BlockBegin(block);
  const int64_t end = BlockEnd(block);
  slot.block = -1;
  slot.begin = begin;
  slot.end = end;
  tbb::parallel_for(0, num_groups_,
                    [&](int group) { ComputeGroup(slot, group, begin, end, /*measure=*/true); });
  slot.block = block;
}

const FullAttentionStream::Slot& FullAttentionStream::SlotOf(int q_head, int64_t step) const {
  const int64_t block = BlockOf(step);
  const Slot& slot = workspace_->slots[block % 2];
  KVSIM_ASSERT(q_head >= 0 && q_head < num_q_heads_ && slot.block == block,
               "no full attention for head {} step {}: its block {} is not computed", q_head, step,
               block);
  return slot;
}

std::span<const float> FullAttentionStream::FullAttention(int q_head, int64_t step) const {
  const Slot& slot = SlotOf(q_head, step);
  return {slot.weights[static_cast<size_t>(q_head / group_size_)]
              .row(GroupRow(slot, q_head, step))
              .data(),
          static_cast<size_t>(step + 1)};
}

std::span<const float> FullAttentionStream::Logits(int q_head, int64_t step) const {
  const Slot& slot = SlotOf(q_head, step);
  return {slot.logits[static_cast<size_t>(q_head / group_size_)]
              .row(GroupRow(slot, q_head, step))
              .data(),
          static_cast<size_t>(step + 1)};
}

std::vector<double> FullAttentionStream::FutureMass(int first_q_head, int num_q_heads) const {
  KVSIM_ASSERT(future_mass_group_ > 0 && num_q_heads == future_mass_group_ &&
                   first_q_head % future_mass_group_ == 0,
               "future mass was computed for groups of {} query heads, not [{}, +{})",
               future_mass_group_, first_q_head, num_q_heads);
  return future_mass_[static_cast<size_t>(first_q_head / future_mass_group_)];
}

double FullAttentionStream::TotalMass(int q_head, int64_t step) const {
  const Slot& slot = SlotOf(q_head, step);
  return slot.total_mass[HeadRow(slot, q_head, step)];
}

Eigen::Map<const Eigen::RowVectorXf> FullAttentionStream::Output(int q_head, int64_t step) const {
  const Slot& slot = SlotOf(q_head, step);
  return Eigen::Map<const Eigen::RowVectorXf>(
      slot.outputs[static_cast<size_t>(q_head / group_size_)]
          .row(GroupRow(slot, q_head, step))
          .data(),
      head_dim_);
}

std::span<const int64_t> FullAttentionStream::TopPositions(int q_head, int64_t step) const {
  const Slot& slot = SlotOf(q_head, step);
  return {slot.top.data() + HeadRow(slot, q_head, step) * kMaxTopK,
          static_cast<size_t>(std::min<int64_t>(kMaxTopK, step + 1))};
}

}  // namespace kvsim::analysis
