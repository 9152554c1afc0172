// `kvsim inspect TRACE [--json] [-o FILE]`: a trace's shape, lengths, storage and size, plus
// per-layer attention statistics over a sample of decode steps.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/command.h"
#include "common/atomic_file.h"
#include "common/json_text.h"
#include "common/softmax.h"
#include "traces/trace_io.h"

namespace kvsim::apps {
namespace {

// Decode steps sampled per layer: enough to average out step-to-step noise while keeping
// inspect of an 8B-shaped trace to seconds.
constexpr int64_t kMaxSampledSteps = 16;
// StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks") keeps
// the first 4 tokens as attention sinks; sink mass is the attention they receive.
constexpr int64_t kSinkTokens = 4;

struct LayerStats {
  double entropy_nats = 0;  // mean over sampled steps and query heads
  double sink_mass = 0;     // same averaging
};

// Up to kMaxSampledSteps evenly spaced decode positions in [prompt_len, T), both ends
// included; a trace without decode positions samples its last prompt position.
std::vector<int64_t> SampleSteps(const traces::TraceMeta& meta) {
  const int64_t first = meta.decode_len() > 0 ? meta.prompt_len : meta.total_len - 1;
  const int64_t count = meta.total_len - first;
  std::vector<int64_t> steps;
  if (count <= kMaxSampledSteps) {
    for (int64_t t = first; t < meta.total_len; ++t) steps.push_back(t);
    return steps;
  }
  for (int64_t i = 0; i < kMaxSampledSteps; ++i) {
    steps.push_back(first + i * (count - 1) / (kMaxSampledSteps - 1));
  }
  return steps;
}

// Causal attention of each query head at each sampled step over positions [0, t].
LayerStats ComputeLayerStats(const traces::LayerTensors& layer,
                             const models::ModelShape& shape,
                             const std::vector<int64_t>& steps) {
  LayerStats stats;
  const int g = shape.GroupSize();
  for (int64_t t : steps) {
    for (int h = 0; h < shape.q_heads; ++h) {
      const ConstMatrixMap keys = layer.keys.Head(h / g);
      const Eigen::VectorXf w = AttentionWeights(keys.topRows(t + 1), layer.queries.Head(h).row(t));
      double entropy = 0;
      for (Eigen::Index j = 0; j < w.size(); ++j) {
        if (w[j] > 0) entropy -= static_cast<double>(w[j]) * std::log(static_cast<double>(w[j]));
      }
      stats.entropy_nats += entropy;
      stats.sink_mass +=
          static_cast<double>(w.head(std::min<Eigen::Index>(kSinkTokens, w.size())).sum());
    }
  }
  const double n = static_cast<double>(steps.size()) * shape.q_heads;
  stats.entropy_nats /= n;
  stats.sink_mass /= n;
  return stats;
}

std::string FormatBytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.2f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

std::string Inspect(const std::string& path, bool json) {
  const traces::TraceReader reader(path);
  const traces::TraceMeta& meta = reader.meta();
  const models::ModelShape& s = meta.shape;
  const std::vector<int64_t> steps = SampleSteps(meta);
  std::vector<LayerStats> stats;
  for (int l = 0; l < s.layers; ++l) {
    stats.push_back(ComputeLayerStats(reader.ReadLayer(l), s, steps));
  }
  if (json) {
    nlohmann::ordered_json j;
    j["path"] = path;
    j["model"] = {{"name", s.name},         {"layers", s.layers},     {"q_heads", s.q_heads},
                  {"kv_heads", s.kv_heads}, {"head_dim", s.head_dim}, {"rope_theta", s.rope_theta}};
    j["prompt_len"] = meta.prompt_len;
    j["decode_len"] = meta.decode_len();
    j["total_len"] = meta.total_len;
    j["storage"] = traces::StorageTypeName(meta.storage);
    j["file_bytes"] = reader.file_bytes();
    j["source"] = meta.source;
    j["has_token_text"] = !meta.token_text.empty();
    j["has_pre_rope"] = meta.has_pre_rope;
    j["segments"] = meta.segments.size();
    j["has_gate_flags"] = reader.has_gate_flags();
    j["sampled_steps"] = steps;
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (size_t l = 0; l < stats.size(); ++l) {
      layers.push_back({{"layer", l},
                        {"mean_entropy_nats", stats[l].entropy_nats},
                        {"mean_sink_mass", stats[l].sink_mass}});
    }
    j["layers"] = layers;
    return JsonText(j, 2) + "\n";
  }
  std::string out = fmt::format("trace:      {}\n", path);
  out += fmt::format(
      "model:      {} (layers {}, q_heads {}, kv_heads {}, head_dim {}, rope_theta {})\n", s.name,
      s.layers, s.q_heads, s.kv_heads, s.head_dim, s.rope_theta);
  out += fmt::format("positions:  prompt {}, decode {}, total {}\n", meta.prompt_len,
                     meta.decode_len(), meta.total_len);
  out += fmt::format("storage:    {}, {} on disk\n", traces::StorageTypeName(meta.storage),
                     FormatBytes(reader.file_bytes()));
  out += fmt::format("source:     {}\n", meta.source);
  out += fmt::format("optional:   token text {}, pre-RoPE {}, segments {}, gate flags {}\n",
                     meta.token_text.empty() ? "no" : "yes", meta.has_pre_rope ? "yes" : "no",
                     meta.segments.size(), reader.has_gate_flags() ? "yes" : "no");
  out += fmt::format("attention over {} sampled steps (positions {}..{}), mean over query heads:\n",
                     steps.size(), steps.front(), steps.back());
  out += fmt::format("{:>6}  {:>13}  {:>9}\n", "layer", "entropy_nats", "sink_mass");
  for (size_t l = 0; l < stats.size(); ++l) {
    out +=
        fmt::format("{:>6}  {:>13.4f}  {:>9.4f}\n", l, stats[l].entropy_nats, stats[l].sink_mass);
  }
  return out;
}

}  // namespace

void RegisterInspectCommand(CLI::App& app) {
  struct Args {
    std::string trace;
    std::string out;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      fmt::format("Print a trace's shape, lengths, storage dtype and size on disk, and per-layer "
                  "mean attention entropy and sink mass (attention on the first {} positions) "
                  "over up to {} evenly spaced decode steps",
                  kSinkTokens, kMaxSampledSteps));
  cmd->add_option("trace", args->trace, "trace file (HDF5, traces/FORMAT.md)")->required();
  cmd->add_flag("--json", args->json, "print JSON instead of text");
  cmd->add_option("-o,--out", args->out, "write to this file (atomically) instead of stdout");
  cmd->callback([args] {
    const std::string report = Inspect(args->trace, args->json);
    if (args->out.empty()) {
      fmt::print("{}", report);
    } else {
      WriteFileAtomically(args->out, report);
    }
  });
}

}  // namespace kvsim::apps
