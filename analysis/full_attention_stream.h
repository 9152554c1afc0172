#pragma once
// The full-cache reference of one layer, streamed a block of decode steps at a time (issue 11).
//
// A sweep advances every cell of a layer in lockstep through blocks of decode steps. For each
// block this object computes, once, every query head's full-cache logits, softmax weights,
// outputs, total masses and top-32 positions: per KV head one GEMM for the logits of its GQA
// group's queries stacked (its keys are packed once for the group, not once per query head) and
// one for the outputs. The cells take their resident logits from it (sim::SharedLogits) and their
// metrics compare against it (FullCacheReference); then the next block replaces it. Memory is O(Hq
// * block * T), not O(Hq * decode steps * T): it does not grow with the decode length.
//
// Oracles need the whole future. FutureMass comes from a first pass over every block (the same
// arithmetic, so the same floats), accumulated in double in the order FullCacheAttention uses;
// FullAttention is available for the block being replayed only.
//
// Thread-safety: ComputeBlock parallelises over KV heads (TBB) and must not run concurrently
// with readers; between calls every accessor may be called concurrently.
#include <Eigen/Dense>
#include <cstdint>
#include <span>
#include <vector>

#include "analysis/metrics.h"
#include "common/tensor.h"
#include "sim/replay.h"
#include "traces/trace.h"

namespace kvsim::analysis {

class FullAttentionStream final : public FullCacheReference, public sim::SharedLogits {
 public:
  struct Options {
    // Decode steps per block; 0 = as many as fit in `memory_bytes` (logits + weights), clamped to
    // [kMinBlockSteps, kMaxBlockSteps] and to the decode length.
    int64_t block_steps = 0;
    int64_t memory_bytes = int64_t{64} << 20;
    // Query heads summed per FutureMass stream (the GQA group in kv-head mode, 1 in query-head
    // mode); 0 = no oracle needs the future, skip the first pass.
    int future_mass_group = 0;
  };
  // The first block covers at least this many decode steps (whatever block_steps says), so
  // policies that read the first decode steps while the prompt is compressed (the LAQ oracles,
  // lookahead 8 by default) find them.
  static constexpr int64_t kMinFirstBlockSteps = 16;
  static constexpr int64_t kMinBlockSteps = 32;
  static constexpr int64_t kMaxBlockSteps = 256;

  // `layer` must outlive this object.
  FullAttentionStream(const traces::LayerTensors& layer,
                      int64_t prompt_len,
                      const Options& options);

  int64_t block_steps() const { return block_steps_; }
  int64_t num_blocks() const;
  int64_t BlockBegin(int64_t block) const {
    return block == 0 ? prompt_len_ : prompt_len_ + first_block_steps_ + (block - 1) * block_steps_;
  }
  int64_t BlockEnd(int64_t block) const;
  // Makes block `block`'s steps current (replacing the previous block).
  void ComputeBlock(int64_t block);
  // Floating-point operations of one pass over every block (logits and outputs: 4 * Hq * sum of
  // visible positions * d), for benchmarks.
  double PassFlops() const;

  int64_t prompt_len() const override { return prompt_len_; }
  int64_t total_len() const override { return total_len_; }
  std::span<const float> FullAttention(int q_head, int64_t step) const override;
  std::vector<double> FutureMass(int first_q_head, int num_q_heads) const override;
  double TotalMass(int q_head, int64_t step) const override;
  Eigen::Map<const Eigen::RowVectorXf> Output(int q_head, int64_t step) const override;
  std::span<const int64_t> TopPositions(int q_head, int64_t step) const override;
  std::span<const float> Logits(int q_head, int64_t step) const override;
  std::span<const float> FullWeights(int q_head, int64_t step) const override {
    return FullAttention(q_head, step);
  }
  std::span<const float> FullOutput(int q_head, int64_t step) const override {
    const Eigen::Map<const Eigen::RowVectorXf> row = Output(q_head, step);
    return {row.data(), static_cast<size_t>(row.size())};
  }

 private:
  // Row of `step` in the current block (asserts it is there).
  int64_t RowOf(int q_head, int64_t step) const;
  // Index of (q_head, step)'s row in its KV group's buffers for the current block.
  int64_t GroupRow(int q_head, int64_t step) const {
    return (q_head % group_size_) * (end_ - begin_) + (step - begin_);
  }
  // Logits and softmax weights of KV group `group`'s query heads for steps [begin, end) into the
  // group's buffers (rows as GroupRow); with `measure`, also their outputs, total masses and top
  // positions.
  void ComputeGroup(int group, int64_t begin, int64_t end, bool measure);
  void ComputeFutureMass();

  const traces::LayerTensors& layer_;
  int64_t prompt_len_;
  int64_t total_len_;
  int num_q_heads_;
  int num_groups_;  // KV heads
  int group_size_;
  int head_dim_;
  float scale_;
  int64_t block_steps_ = 0;
  int64_t first_block_steps_ = 0;
  int64_t buffer_rows_ = 0;  // rows of the block buffers: the longest block
  int future_mass_group_ = 0;
  int64_t begin_ = 0;  // current block: steps [begin_, end_)
  int64_t end_ = 0;

  // Per KV group; rows as GroupRow: the group's query heads one after another, block rows each.
  std::vector<RowMatrixXf> queries_;  // [group]: group_size * block_steps x d, stacked queries
  std::vector<RowMatrixXf> logits_;   // [group]: group_size * block_steps x T (past end_ unused)
  std::vector<RowMatrixXf> weights_;  // [group]: same, zero past each row's step
  std::vector<RowMatrixXf> outputs_;  // [group]: group_size * block_steps x d
  std::vector<int64_t> top_;          // [q_head][row][kMaxTopK], -1 padded
  std::vector<double> total_mass_;    // [q_head][row]
  std::vector<std::vector<double>> future_mass_;  // [stream of future_mass_group heads][T]
};

}  // namespace kvsim::analysis
