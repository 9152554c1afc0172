#include "traces/capture.h"

#include <chrono>

#include "common/error.h"

namespace kvsim::traces {
namespace {

// Copies an n x (heads*d) head-major activation matrix into a [heads, n, d] tensor.
HeadTensor ToHeadTensor(const RowMatrixXf& x, int head_dim) {
  const int heads = static_cast<int>(x.cols() / head_dim);
  HeadTensor t(heads, x.rows(), head_dim);
  for (int h = 0; h < heads; ++h) {
    t.Head(h) = x.middleCols(static_cast<Eigen::Index>(h) * head_dim, head_dim);
  }
  return t;
}

// Collects one Forward() block's activations per layer, then hands them to the sink.
class Recorder : public models::ForwardObserver {
 public:
  Recorder(const models::LlamaModel& model,
           const models::Tokenizer* tokenizer,
           bool with_pre_rope,
           CaptureSink& sink,
           ProgressBar* progress)
      : head_dim_(model.config().head_dim()),
        tokenizer_(tokenizer),
        with_pre_rope_(with_pre_rope),
        sink_(sink),
        progress_(progress),
        layers_(static_cast<size_t>(model.config().layers)) {}

  void OnLayer(const models::LayerActivations& a) override {
    LayerTensors& t = layers_[static_cast<size_t>(a.layer)];
    t.queries = ToHeadTensor(a.q, head_dim_);
    t.keys = ToHeadTensor(a.k, head_dim_);
    t.values = ToHeadTensor(a.v, head_dim_);
    if (with_pre_rope_) {
      t.queries_pre_rope = ToHeadTensor(a.q_pre_rope, head_dim_);
      t.keys_pre_rope = ToHeadTensor(a.k_pre_rope, head_dim_);
    }
  }

  void OnBlock(std::span<const int32_t> tokens) {
    std::vector<std::string> text;
    if (tokenizer_ != nullptr) {
      for (const int32_t id : tokens) text.push_back(tokenizer_->TokenText(id));
    }
    sink_.Append(tokens, text, layers_);
    if (progress_ != nullptr) progress_->Advance(static_cast<int64_t>(tokens.size()));
  }

 private:
  int head_dim_;
  const models::Tokenizer* tokenizer_;
  bool with_pre_rope_;
  CaptureSink& sink_;
  ProgressBar* progress_;
  std::vector<LayerTensors> layers_;
};

// Concatenates [heads, n_i, d] tensors along positions.
HeadTensor Concat(const std::vector<const HeadTensor*>& parts) {
  if (parts.empty() || parts.front()->empty()) return {};
  const int heads = parts.front()->heads();
  const int d = parts.front()->dim();
  int64_t total = 0;
  for (const HeadTensor* p : parts) total += p->positions();
  HeadTensor out(heads, total, d);
  for (int h = 0; h < heads; ++h) {
    int64_t row = 0;
    for (const HeadTensor* p : parts) {
      out.Head(h).middleRows(row, p->positions()) = p->Head(h);
      row += p->positions();
    }
  }
  return out;
}

}  // namespace

MemoryCaptureSink::MemoryCaptureSink(TraceMeta meta) : meta_(std::move(meta)) {
  meta_.token_ids.clear();
  meta_.token_text.clear();
}

void MemoryCaptureSink::Append(std::span<const int32_t> token_ids,
                               std::span<const std::string> token_text,
                               std::span<const LayerTensors> layers) {
  KVSIM_ASSERT(token_text.empty() || token_text.size() == token_ids.size(),
               "{} token texts for {} positions", token_text.size(), token_ids.size());
  meta_.token_ids.insert(meta_.token_ids.end(), token_ids.begin(), token_ids.end());
  meta_.token_text.insert(meta_.token_text.end(), token_text.begin(), token_text.end());
  blocks_.emplace_back(layers.begin(), layers.end());
}

Trace MemoryCaptureSink::TakeTrace(int64_t prompt_len) {
  TraceMeta meta = std::move(meta_);
  meta.prompt_len = prompt_len;
  meta.total_len = static_cast<int64_t>(meta.token_ids.size());
  if (meta.token_text.size() != meta.token_ids.size()) meta.token_text.clear();
  std::vector<LayerTensors> layers(static_cast<size_t>(meta.shape.layers));
  for (size_t l = 0; l < layers.size(); ++l) {
    auto parts = [&](HeadTensor LayerTensors::*member) {
      std::vector<const HeadTensor*> out;
      for (const auto& block : blocks_) out.push_back(&(block[l].*member));
      return Concat(out);
    };
    layers[l].queries = parts(&LayerTensors::queries);
    layers[l].keys = parts(&LayerTensors::keys);
    layers[l].values = parts(&LayerTensors::values);
    layers[l].queries_pre_rope = parts(&LayerTensors::queries_pre_rope);
    layers[l].keys_pre_rope = parts(&LayerTensors::keys_pre_rope);
  }
  blocks_.clear();
  meta_ = TraceMeta{};
  return Trace(std::move(meta), std::move(layers));
}

TraceMeta CaptureMeta(const models::LlamaModel& model,
                      const std::string& model_name,
                      const std::string& source,
                      StorageType storage,
                      bool with_pre_rope) {
  TraceMeta meta;
  meta.shape = model.config().Shape(model_name);
  meta.source = source;
  meta.storage = storage;
  meta.has_pre_rope = with_pre_rope;
  return meta;
}

CaptureResult Capture(const models::LlamaModel& model,
                      const models::Tokenizer* tokenizer,
                      std::span<const int32_t> prompt,
                      const CaptureOptions& options,
                      CaptureSink& sink,
                      ProgressBar* progress) {
  const auto start = std::chrono::steady_clock::now();
  Recorder recorder(model, tokenizer, options.with_pre_rope, sink, progress);
  models::GenerateOptions generate;
  generate.new_tokens = options.decode_tokens;
  generate.sampling = options.sampling;
  generate.prefill_block = options.prefill_block;
  CaptureResult result;
  result.cache = model.NewState();
  models::Generation g = models::Generate(
      model, prompt, generate, result.cache, &recorder,
      [&](std::span<const int32_t> tokens, std::span<const int64_t>) { recorder.OnBlock(tokens); });
  result.tokens = std::move(g.tokens);
  result.prompt_len = g.prompt_len;
  if (tokenizer != nullptr) result.text = tokenizer->Decode(result.tokens);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace kvsim::traces
