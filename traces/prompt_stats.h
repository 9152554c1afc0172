#pragma once
// The prompt-statistics sidecar (traces/FORMAT.md, "Prompt-statistics sidecar"): the causal
// column sums of every layer's prompt attention (H2O, D2O, MiKV, LazyEviction's prefill score),
// the only O(n^2) cost of a replay, stored beside a trace as `<trace>.stats.h5` so that replays
// and sweeps read them instead of recomputing. The sidecar records the trace shape, the lengths
// and a content hash per layer of the data the statistic depends on (the prompt rows of that
// layer's queries and keys), so a sidecar left over from another trace is detected as stale.
// The trace file itself is never touched. Computing the sums is sim::ComputeColumnSums; this
// file only stores, finds and validates them.
#include <Eigen/Dense>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "traces/trace.h"

namespace kvsim::traces {

// One layer's statistics: column_sums[q_head] has prompt_len entries.
struct LayerPromptStats {
  std::vector<Eigen::VectorXf> column_sums;
};

// What a sidecar must match to belong to a trace: the trace's shape and lengths.
struct PromptStatsShape {
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int64_t prompt_len = 0;
  int64_t total_len = 0;

  static PromptStatsShape Of(const TraceMeta& meta);
  friend bool operator==(const PromptStatsShape&, const PromptStatsShape&) = default;
};

// "<trace>.stats.h5": the trace's full file name with ".stats.h5" appended (t.h5 ->
// t.h5.stats.h5), so two traces in one folder never share a sidecar.
std::filesystem::path PromptStatsPath(const std::filesystem::path& trace);

// 64-bit FNV-1a over the prompt rows of `layer`'s queries (heads 0..Hq-1, rows [0, prompt_len),
// row-major) then keys (heads 0..Hkv-1, same rows), as float32 bit patterns taken two at a time
// as little-endian 64-bit words (the first float in the low half; an odd last float is padded
// with zero). Exact bits: a float16 trace hashes the float32 values its reader produces. About
// 6 GB/s; REQUIRES prompt_len <= positions of both tensors (asserted).
uint64_t PromptContentHash(const LayerTensors& layer, int64_t prompt_len);

// Writes a sidecar one layer at a time (a 32-layer trace never needs to be in memory at once),
// under a temporary name renamed over PromptStatsPath(trace) by Commit(); destroyed without
// Commit(), it removes the temporary file, so a failure never leaves a sidecar at the final
// name. Not thread-safe.
class PromptStatsWriter {
 public:
  // Throws InputError naming the sidecar if its directory does not exist or HDF5 cannot create
  // the temporary file.
  PromptStatsWriter(const std::filesystem::path& trace, const PromptStatsShape& shape);
  ~PromptStatsWriter();
  PromptStatsWriter(const PromptStatsWriter&) = delete;
  PromptStatsWriter& operator=(const PromptStatsWriter&) = delete;

  // REQUIRES 0 <= layer < shape.layers, each layer once, q_heads vectors of prompt_len finite
  // values (asserted: they come from sim::ComputeColumnSums). `content_hash` =
  // PromptContentHash of the layer's tensors as read from the trace file.
  void AddLayer(int layer, uint64_t content_hash, const LayerPromptStats& stats);
  // REQUIRES every layer added (asserted). Writes, closes and renames; InputError on failure.
  void Commit();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// What LoadPromptStats does with a sidecar that exists but belongs to other data (shape,
// lengths or content hash differ): kWarn prints one line on stderr (once per sidecar file per
// process) saying it is stale and the statistics will be recomputed, and returns nullopt; kQuiet
// returns nullopt silently; kError throws InputError (strict mode).
enum class OnStale { kWarn, kQuiet, kError };

// The stored statistics of `layer` if PromptStatsPath(trace) exists and matches `tensors` (the
// layer's tensors as read from `trace`) and `prompt_len`: q/kv heads, head_dim, total_len =
// tensors' positions, prompt_len, layer < the sidecar's layers, and the content hash. nullopt if
// there is no sidecar or it is stale (see OnStale). A corrupt sidecar (not HDF5, a missing or
// mistyped attribute or dataset, a dataset of the wrong shape, a non-finite value) is an
// InputError naming the file, the field and what was expected. Thread-safe (HDF5 calls
// serialize on hdf5::Hdf5Mutex); hashes the layer, ~0.1 s for an 8B layer at 32k.
std::optional<LayerPromptStats> LoadPromptStats(const std::filesystem::path& trace,
                                                int layer,
                                                const LayerTensors& tensors,
                                                int64_t prompt_len,
                                                OnStale on_stale = OnStale::kWarn);

// As above with the expectation given directly: `expected` = PromptStatsShape::Of(trace meta)
// (expected.layers is checked too) and `content_hash` = PromptContentHash(layer tensors).
std::optional<LayerPromptStats> LoadPromptStats(const std::filesystem::path& trace,
                                                int layer,
                                                const PromptStatsShape& expected,
                                                uint64_t content_hash,
                                                OnStale on_stale = OnStale::kWarn);

}  // namespace kvsim::traces
