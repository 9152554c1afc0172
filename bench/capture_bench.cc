// Capture speed of the CPU reference transformer: tokens per second of prefill and decode with
// and without recording, and of a full capture streamed to an f16 trace, on the bundled
// stories260K model and on a random-weight Llama of ~110M parameters (dim 768, 12 layers, 12
// heads, FFN 2048, vocab 32000: GPT-2-small sized). Shows where CPU capture stops being
// practical. Prints figures; never asserts on time.
#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include "models/generate.h"
#include "models/model_loader.h"
#include "traces/capture.h"

namespace kvsim::traces {
namespace {

// Wall-clock and process CPU seconds since construction. The development machine is shared
// (load ~10 on 2 cores), so the single-threaded CPU seconds are the figure to quote; wall-clock
// is printed alongside.
class Timer {
 public:
  double wall_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_).count();
  }
  double cpu_s() const { return static_cast<double>(std::clock() - cpu_) / CLOCKS_PER_SEC; }
  std::string Rate(int64_t tokens) const {
    const auto n = static_cast<double>(tokens);
    return fmt::format("{:9.1f} tok/s CPU ({:8.1f} wall)", n / cpu_s(), n / wall_s());
  }

 private:
  std::chrono::steady_clock::time_point wall_ = std::chrono::steady_clock::now();
  std::clock_t cpu_ = std::clock();
};

// Discards everything: isolates the cost of gathering q/k/v from the cost of storing it.
class NullSink : public CaptureSink {
 public:
  void Append(std::span<const int32_t>,
              std::span<const std::string>,
              std::span<const LayerTensors>) override {}
};

int64_t Parameters(const models::LlamaWeights& w) {
  int64_t n = w.token_embedding.size() + w.final_norm.size() + w.classifier.size();
  for (const auto& l : w.layers) {
    n += l.wq.size() + l.wk.size() + l.wv.size() + l.wo.size() + l.w1.size() + l.w2.size() +
         l.w3.size() + l.attn_norm.size() + l.ffn_norm.size();
  }
  return n;
}

void Bench(const std::string& label,
           const models::LlamaModel& model,
           const models::Tokenizer* tokenizer,
           int64_t prompt_len,
           int64_t decode) {
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (int64_t i = 0; i < prompt_len; ++i) {
    prompt[static_cast<size_t>(i)] =
        static_cast<int32_t>(1 + (i * 37) % (model.config().vocab_size - 1));
  }
  fmt::print("{}: {:.1f}M parameters, prompt {} + decode {} tokens\n", label,
             static_cast<double>(Parameters(model.weights())) / 1e6, prompt_len, decode);

  // Model only: batched prefill, then decode.
  models::KvState state = model.NewState();
  const Timer prefill;
  model.Forward(prompt, state);
  fmt::print("  model only, prefill   {}\n", prefill.Rate(prompt_len));
  const Timer decoding;
  int32_t token = 1;
  for (int64_t i = 0; i < decode; ++i) {
    const RowMatrixXf logits = model.Forward(std::span<const int32_t>(&token, 1), state);
    token =
        models::Argmax(std::span<const float>(logits.data(), static_cast<size_t>(logits.cols())));
  }
  fmt::print("  model only, decode    {}  {:.2f} ms/token CPU\n", decoding.Rate(decode),
             1e3 * decoding.cpu_s() / static_cast<double>(decode));

  CaptureOptions options;
  options.decode_tokens = decode;
  NullSink null_sink;
  const Timer recording;
  Capture(model, tokenizer, prompt, options, null_sink);
  fmt::print("  capture, no storage   {}  (prefill + decode + q/k/v copies)\n",
             recording.Rate(prompt_len + decode));

  const std::string path = (std::filesystem::temp_directory_path() /
                            fmt::format("kvsim_capture_bench_{}.h5", ::getpid()))
                               .string();
  const Timer to_file;
  TraceWriter writer(path, CaptureMeta(model, label, "bench", StorageType::kFloat16, false));
  TraceWriterSink sink(writer);
  const CaptureResult captured = Capture(model, tokenizer, prompt, options, sink);
  writer.SetPromptLength(captured.prompt_len);
  writer.Commit();
  fmt::print("  capture to f16 trace  {}  ({:.1f} MiB)\n", to_file.Rate(prompt_len + decode),
             static_cast<double>(std::filesystem::file_size(path)) / (1024.0 * 1024.0));
  std::filesystem::remove(path);
}

void Run() {
  const models::LoadedModel stories = models::LoadModel(models::BundledModelPath());
  Bench("stories260K", stories.model, &*stories.tokenizer, 256, 256);

  models::LlamaConfig config;
  config.dim = 768;
  config.hidden_dim = 2048;
  config.layers = 12;
  config.q_heads = 12;
  config.kv_heads = 12;
  config.vocab_size = 32000;
  config.context_length = 4096;
  const models::LlamaModel random_model(models::RandomLlamaWeights(config, 1));
  Bench("llama-110M-random", random_model, nullptr, 512, 64);
}

}  // namespace
}  // namespace kvsim::traces

int main() {
  kvsim::traces::Run();
  return 0;
}
