#pragma once
// Reading and writing trace files (HDF5, traces/FORMAT.md).
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "traces/trace.h"

namespace kvsim::traces {

struct TraceWriterOptions {
  StorageType storage = StorageType::kFloat16;
  bool with_pre_rope = false;  // also store layers/<l>/q_pre_rope and k_pre_rope
  int chunk_positions = 256;   // HDF5 chunk = [1 head, chunk_positions, head_dim]
  // 0 (default): no filter, so writing and reading run at disk and memory speed. 1-9: shuffle +
  // gzip (deflate) at that level, about 13% smaller on float16 and several times slower to write
  // (measured in FORMAT.md). Readers need no setting either way.
  int compression_level = 0;
};

// Streams a trace to disk: Append() blocks of positions as they are produced (a capture appends
// per decode step, a generator in one block), then Commit(). The file is written under a
// temporary name and renamed into place by Commit(); a writer destroyed without Commit()
// removes it, so no half-written trace is ever left at `path`.
class TraceWriter {
 public:
  // `meta.total_len`, `prompt_len`, `token_ids` and `token_text` are ignored here: the
  // positions come from Append() and the prompt length from SetPromptLength().
  TraceWriter(const std::string& path, const TraceMeta& meta, TraceWriterOptions options = {});
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // Appends n positions. `token_ids` has n entries; `token_text` has n entries or none (then the
  // trace has no text); `layers` has one entry per model layer with queries [q_heads, n, d],
  // keys/values [kv_heads, n, d] (and the pre-RoPE tensors if options.with_pre_rope).
  void Append(std::span<const int32_t> token_ids,
              std::span<const std::string> token_text,
              std::span<const LayerTensors> layers);
  void SetPromptLength(int64_t prompt_len);
  void SetSegments(std::vector<Segment> segments);
  int64_t positions_written() const;

  // Checks T >= prompt_len >= 1 and segment bounds, writes the final attributes, closes and
  // renames. Throws InputError (and leaves no file) if the trace is inconsistent.
  void Commit();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  friend void WriteTrace(const std::string& path, const Trace& trace, TraceWriterOptions options);
  friend void WriteTraceByLayer(const std::string& path,
                                const TraceMeta& meta,
                                const std::function<void(int layer, LayerTensors& out)>& produce,
                                TraceWriterOptions options);
};

// Writes a trace whose producer makes one whole layer at a time (kvsim synth), so the trace is
// never whole in memory. `meta` gives everything but the tensors: shape, prompt_len,
// total_len, token_ids (total_len of them), token_text (as many or none), segments, source,
// has_pre_rope. `produce(l, out)` is called once per layer, in order, and fills `out` with
// layer l's tensors over all total_len positions. It runs on another thread than the caller's,
// producing layer l + 1 while layer l is written, into two buffers used in turn: `out` holds
// the tensors of layer l - 2 (or nothing), so a producer that keeps tensors of the right shape
// reuses their memory (fresh memory costs a page fault per 4 KiB). Throws InputError on an
// inconsistent meta or a layer of the wrong shape, leaving no file; exceptions from `produce`
// propagate (also leaving no file).
void WriteTraceByLayer(const std::string& path,
                       const TraceMeta& meta,
                       const std::function<void(int layer, LayerTensors& out)>& produce,
                       TraceWriterOptions options = {});

// Writes a whole in-memory trace. The dtype on disk is options.storage (trace.meta().storage is
// not consulted); pre-RoPE tensors are written iff trace.meta().has_pre_rope.
void WriteTrace(const std::string& path, const Trace& trace, TraceWriterOptions options = {});

// Opens a trace file and validates it once: required attributes present with the right types,
// every dataset's dtype and shape consistent with the model shape and T, every filter
// decodable by this HDF5 (writers choose filters: FORMAT.md), T >= prompt_len >= 1, token ids
// in range, segments inside [0, T), and every stored value finite (checked by a streaming pass
// over the stored bits, one head in memory at a time). Errors are InputError naming the file,
// the group/dataset/attribute and what was expected. After construction, reads cannot fail on
// format grounds. Reading one layer or slice never loads the others.
class TraceReader {
 public:
  explicit TraceReader(const std::string& path);
  ~TraceReader();
  TraceReader(TraceReader&&) noexcept;
  TraceReader& operator=(TraceReader&&) noexcept;

  const std::string& path() const;
  const TraceMeta& meta() const;
  StorageType storage() const;
  uint64_t file_bytes() const;

  LayerTensors ReadLayer(int layer) const;
  // The same into `out`, reusing its buffers where their shapes already match: a loop over
  // layers then allocates once (fresh memory costs a page fault per 4 KiB, more than the read).
  void ReadLayer(int layer, LayerTensors* out) const;
  KvHeadSlice ReadSlice(int layer, int kv_head) const;
  Trace ReadAll() const;

  // Attention-Gate keep (1) / evict (0) flags, the optional dataset /gate_flags
  // [layers, kv_heads, T] uint8 (FORMAT.md), validated at open like everything else.
  bool has_gate_flags() const;
  // The T flags of one (layer, KV head). Precondition: has_gate_flags().
  std::vector<uint8_t> ReadGateFlags(int layer, int kv_head) const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Convenience: TraceReader(path).ReadAll().
Trace ReadTrace(const std::string& path);

}  // namespace kvsim::traces
