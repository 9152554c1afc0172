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
// Two blocks are held at once, in alternating slots, so that a sweep can compute block b + 1
// while its cells replay block b (the cells' per-step work then fills the cores the GEMMs leave
// idle). The slots' memory lives in a Workspace that a sweep keeps from layer to layer:
// first-touching fresh pages costs more than the arithmetic of a short block.
//
// Thread-safety: ComputeBlock parallelises over KV heads (TBB). It may run concurrently with
// readers of the other slot's block (block - 1), never with readers of the block it replaces
// (block - 2) and never with another ComputeBlock. Readers may run concurrently with each other.
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
  // The buffers of one block: per KV group, rows as GroupRow (the group's query heads one after
  // another, the block's steps each).
  struct Slot {
    std::vector<RowMatrixXf> queries;  // [group]: group_size * rows x d, stacked queries
    std::vector<RowMatrixXf> logits;   // [group]: group_size * rows x T (past the block unused)
    std::vector<RowMatrixXf> weights;  // [group]: same, zero past each row's step
    std::vector<RowMatrixXf> outputs;  // [group]: group_size * rows x d
    std::vector<int64_t> top;          // [q_head][row][kMaxTopK], -1 padded
    std::vector<double> total_mass;    // [q_head][row]
    int64_t begin = 0;                 // steps [begin, end) of the block held
    int64_t end = 0;
    int64_t block = -1;  // the block held, -1 = none
  };
  // Memory for the two slots, reusable by the streams of successive layers (sized up as needed,
  // never shrunk). Not thread-safe: one stream at a time.
  struct Workspace {
    Slot slots[2];
  };

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

  // `layer` must outlive this object, and so must `workspace` when given (else the stream owns
  // its buffers).
  FullAttentionStream(const traces::LayerTensors& layer,
                      int64_t prompt_len,
                      const Options& options,
                      Workspace* workspace = nullptr);

  int64_t block_steps() const { return block_steps_; }
  int64_t num_blocks() const;
  int64_t BlockBegin(int64_t block) const {
    return block == 0 ? prompt_len_ : prompt_len_ + first_block_steps_ + (block - 1) * block_steps_;
  }
  int64_t BlockEnd(int64_t block) const;
  // The block that holds decode step `step`.
  int64_t BlockOf(int64_t step) const;
  // Makes block `block`'s steps available, replacing block - 2 (see Thread-safety).
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
  // The slot holding `step`'s block (asserts it is there).
  const Slot& SlotOf(int q_head, int64_t step) const;
  // Index of (q_head, step)'s row in its KV group's buffers of `slot`.
  int64_t GroupRow(const Slot& slot, int q_head, int64_t step) const {
    return (q_head % group_size_) * (slot.end - slot.begin) + (step - slot.begin);
  }
  // Index of (q_head, step)'s row in the per-head arrays (top, total_mass) of `slot`.
  size_t HeadRow(const Slot& slot, int q_head, int64_t step) const {
    return static_cast<size_t>(q_head) * static_cast<size_t>(buffer_rows_) +
           static_cast<size_t>(step - slot.begin);
  }
  // Sizes `slot` for this layer's blocks (first use only allocates).
  void PrepareSlot(Slot& slot) const;
  // Logits and softmax weights of KV group `group`'s query heads for steps [begin, end) into the
  // group's buffers of `slot` (rows as GroupRow); with `measure`, also their outputs, total
  // masses and top positions.
  void ComputeGroup(Slot& slot, int group, int64_t begin, int64_t end, bool measure) const;
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

  Workspace own_workspace_;  // used when no workspace is given
  Workspace* workspace_;
  std::vector<std::vector<double>> future_mass_;  // [stream of future_mass_group heads][T]
};

}  // namespace kvsim::analysis
