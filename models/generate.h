#pragma once
// The generation loop shared by `kvsim capture`, `kvsim generate` and the tests: prefill the
// prompt in blocks (matrix-matrix), then decode token by token, as llama2.c run.c generate().
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "models/llama_model.h"
#include "models/sampler.h"

namespace kvsim::models {

struct GenerateOptions {
  int64_t new_tokens = 0;  // decode steps after the prompt
  SamplingOptions sampling;
  // Prompt positions per prefill Forward() call; 0 = the whole prompt in one block. Smaller
  // blocks bound the memory of one block's activations; the numbers are the same either way.
  int64_t prefill_block = 0;
};

struct Generation {
  std::vector<int32_t> tokens;  // prompt followed by the generated tokens
  int64_t prompt_len = 0;
  // For each generated token: the largest logit of the distribution it was drawn from (the
  // argmax logit, for reference checks).
  std::vector<float> max_logits;
};

// Called after each Forward() with the block just run (its tokens and positions).
using BlockCallback =
    std::function<void(std::span<const int32_t> tokens, std::span<const int64_t> positions)>;

// Runs `prompt` (>= 1 token) then samples new_tokens tokens. Every token of the result is
// forwarded, the last generated one included, so on return `state` holds keys/values of all
// prompt_len + generated positions and `observer` has seen each of them once. Throws InputError
// if the prompt is empty or prompt + new tokens exceed the model's context length (never
// truncates). `state` must be empty.
Generation Generate(const LlamaModel& model,
                    std::span<const int32_t> prompt,
                    const GenerateOptions& options,
                    KvState& state,
                    ForwardObserver* observer = nullptr,
                    const BlockCallback& on_block = {});

}  // namespace kvsim::models
