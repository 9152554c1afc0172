#pragma once
// How long one scheduler iteration takes in simulated time: a roofline over the whole batch.
//
//   time = overhead_s + max(bytes / hbm_bytes_per_s, flops / peak_flops) + swap_bytes / swap_bw
//   bytes = weight_bytes + sum over sequences of the KV bytes they attend over (every held token
//           of every (layer, KV head), read once per iteration)
//   flops = 2 x params x (tokens processed: prefill chunk tokens + one per decode)
//           + attention: 4 x layers x q_heads x head_dim x (attended positions summed over the
//           batch's query tokens)
//
// A decode-only batch is thus bound by reading the weights and the KV cache, a large prefill
// chunk by its FLOPs. The defaults are an H100 SXM (HBM3 about 3.35 TB/s, about 989 TFLOP/s dense
// fp16, PCIe 5 about 25 GB/s effective for swap) stated as defaults, not as truth; override them
// in the scenario's [cost] table. Model size defaults to an estimate from the trace's shape (see
// DefaultParams) unless the scenario gives params / weight_bytes.
#include <cstdint>

#include "models/model_shape.h"

namespace kvsim::serving {

struct CostModel {
  double hbm_bytes_per_s = 3.35e12;
  double peak_flops = 989e12;
  double swap_bytes_per_s = 25e9;  // host <-> device copies of preempt-swap
  double overhead_s = 1e-3;        // per iteration: scheduling, kernel launches, sampling
  double params = 0.0;             // model parameters; 0 = DefaultParams(shape)
  double weight_bytes = 0.0;       // bytes read per iteration; 0 = 2 x params (fp16)

  // Throws InputError naming `context` and the field for a negative or non-finite value, or a
  // zero bandwidth / peak.
  void Validate(const char* context) const;
  // The transformer estimate 12 x layers x d_model^2 with d_model = q_heads x head_dim
  // (attention 4 d^2 + MLP 8 d^2 per layer; embeddings and GQA savings left out).
  static double DefaultParams(const models::ModelShape& shape);
};

// One iteration's work, summed over its batch.
struct IterationWork {
  int64_t tokens = 0;             // prefill chunk tokens + one per decoding sequence
  int64_t attended_kv_bytes = 0;  // KV bytes read
  double attended_pairs = 0.0;    // (query token, attended position) pairs, per query head
  int64_t swap_bytes = 0;         // bytes copied between host and device this iteration
};

// Seconds one iteration takes. `shape` gives the attention FLOP factor.
double IterationSeconds(const CostModel& cost,
                        const models::ModelShape& shape,
                        const IterationWork& work);

}  // namespace kvsim::serving
