#pragma once
// Trace capture: run a real model (models::LlamaModel) over a prompt and N decode steps with the
// full KV cache, and record every layer's post-RoPE q/k/v (optionally pre-RoPE q/k), token ids
// and token text, one Forward() block at a time. Recording goes through CaptureSink so a
// capture can stream to disk (TraceWriterSink) or stay in memory (MemoryCaptureSink, used by
// tests and closed-loop evaluation) along one code path.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/progress.h"
#include "models/generate.h"
#include "models/llama_model.h"
#include "models/tokenizer.h"
#include "traces/trace.h"
#include "traces/trace_io.h"

namespace kvsim::traces {

// Receives consecutive blocks of positions, in order, from position 0.
class CaptureSink {
 public:
  virtual ~CaptureSink() = default;
  // n positions: `token_ids` (n), `token_text` (n or none), `layers` (one per model layer,
  // queries [q_heads, n, d], keys/values [kv_heads, n, d], pre-RoPE tensors when captured).
  virtual void Append(std::span<const int32_t> token_ids,
                      std::span<const std::string> token_text,
                      std::span<const LayerTensors> layers) = 0;
};

// Streams blocks into a TraceWriter (which owns the file and its atomic commit).
class TraceWriterSink : public CaptureSink {
 public:
  explicit TraceWriterSink(TraceWriter& writer) : writer_(writer) {}
  void Append(std::span<const int32_t> token_ids,
              std::span<const std::string> token_text,
              std::span<const LayerTensors> layers) override {
    writer_.Append(token_ids, token_text, layers);
  }

 private:
  TraceWriter& writer_;
};

// Concatenates blocks into an in-memory Trace.
class MemoryCaptureSink : public CaptureSink {
 public:
  // `meta` gives the shape, source, storage and has_pre_rope; positions come from Append().
  explicit MemoryCaptureSink(TraceMeta meta);
  void Append(std::span<const int32_t> token_ids,
              std::span<const std::string> token_text,
              std::span<const LayerTensors> layers) override;
  // The trace of everything appended, with the given prompt length. Leaves the sink empty.
  Trace TakeTrace(int64_t prompt_len);

 private:
  TraceMeta meta_;
  std::vector<std::vector<LayerTensors>> blocks_;  // [block][layer]
};

struct CaptureOptions {
  int64_t decode_tokens = 0;
  models::SamplingOptions sampling;  // default greedy
  bool with_pre_rope = false;
  // Prompt positions per prefill block (and per Append of the prompt): bounds the memory of one
  // block's activations. 256 matches the trace chunk length (FORMAT.md).
  int64_t prefill_block = 256;
};

struct CaptureResult {
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len = 0;
  std::string text;       // decoded prompt + generation ("" without a tokenizer)
  models::KvState cache;  // the full cache the model attended over, all T positions
  double seconds = 0.0;   // wall time of the model run (prefill + decode + recording)
};

// The trace metadata of a capture of `model`: shape named `model_name`, `source`, storage and
// has_pre_rope. token ids/text and lengths are filled by the sink.
TraceMeta CaptureMeta(const models::LlamaModel& model,
                      const std::string& model_name,
                      const std::string& source,
                      StorageType storage,
                      bool with_pre_rope);

// Runs the prompt (prefill, in blocks) and options.decode_tokens decode steps, appending every
// position's tensors to `sink`, token text from `tokenizer` when given (else none). `progress`
// (may be null) advances by one per position. Throws InputError if the prompt is empty or
// prompt + decode exceeds the model's context length (never truncates).
CaptureResult Capture(const models::LlamaModel& model,
                      const models::Tokenizer* tokenizer,
                      std::span<const int32_t> prompt,
                      const CaptureOptions& options,
                      CaptureSink& sink,
                      ProgressBar* progress = nullptr);

}  // namespace kvsim::traces
