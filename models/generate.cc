#include "models/generate.h"

#include <algorithm>

#include "common/error.h"

namespace kvsim::models {

Generation Generate(const LlamaModel& model,
                    std::span<const int32_t> prompt,
                    const GenerateOptions& options,
                    KvState& state,
                    ForwardObserver* observer,
                    const BlockCallback& on_block) {
  const int64_t context = model.config().context_length;
  const auto prompt_len = static_cast<int64_t>(prompt.size());
  if (prompt_len == 0) ThrowInputError("the prompt is empty: expected at least one token");
  if (prompt_len > context) {
    ThrowInputError("the prompt is {} tokens, longer than the model's context length {}",
                    prompt_len, context);
  }
  if (options.new_tokens < 0 || prompt_len + options.new_tokens > context) {
    ThrowInputError(
        "prompt ({} tokens) + {} decode tokens = {} positions, expected at most the "
        "model's context length {}",
        prompt_len, options.new_tokens, prompt_len + options.new_tokens, context);
  }
  KVSIM_ASSERT(state.total_entries() == 0 && state.next_position() == 0,
               "Generate needs an empty KvState");
  Sampler sampler(options.sampling);
  Generation result;
  result.prompt_len = prompt_len;
  result.tokens.assign(prompt.begin(), prompt.end());

  auto run = [&](std::span<const int32_t> block) {
    std::vector<int64_t> positions(block.size());
    for (size_t i = 0; i < block.size(); ++i) {
      positions[i] = state.next_position() + static_cast<int64_t>(i);
    }
    RowMatrixXf logits = model.Forward(block, positions, state, observer);
    if (on_block) on_block(block, positions);
    return logits;
  };

  const int64_t block = options.prefill_block > 0 ? options.prefill_block : prompt_len;
  RowMatrixXf logits;
  for (int64_t begin = 0; begin < prompt_len; begin += block) {
    const int64_t n = std::min(block, prompt_len - begin);
    logits = run(prompt.subspan(static_cast<size_t>(begin), static_cast<size_t>(n)));
  }
  for (int64_t step = 0; step < options.new_tokens; ++step) {
    const std::span<const float> row(logits.data(), static_cast<size_t>(logits.cols()));
    result.max_logits.push_back(*std::max_element(row.begin(), row.end()));
    const int32_t next = sampler.Sample(row);
    result.tokens.push_back(next);
    logits = run(std::span<const int32_t>(&result.tokens.back(), 1));
  }
  return result;
}

}  // namespace kvsim::models
