#pragma once
// Random in-memory traces for tests and benchmarks of the replay engine (not a model of real
// attention: use traces/synthetic for structured scenarios). Queries, keys and values are
// N(0, 1) scaled so that logits have standard deviation `logit_scale`, which makes attention
// peaky enough that policies disagree. The trace also carries Attention-Gate flags (keep with
// probability 3/4, from their own generator, so the tensors do not depend on them) so that the
// `gate` policy runs on it like every other. Deterministic in (shape, lengths, seed).
#include <cstdint>

#include "models/model_shape.h"
#include "traces/trace.h"

namespace kvsim::sim {

traces::Trace RandomTrace(const models::ModelShape& shape,
                          int64_t prompt_len,
                          int64_t total_len,
                          uint64_t seed,
                          double logit_scale = 2.0);

}  // namespace kvsim::sim
