// Size on disk and write/read speed of a trace shaped like Llama-3-8B cut to 4 layers, 4096
// prompt + 256 decode positions, N(0,1) values, for each storage dtype and gzip level.
// Random values compress poorly (real activations have structure), so sizes are a worst case.
// Prints figures; never asserts on time.
#include <fmt/core.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <random>

#include "models/model_shape.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

constexpr int64_t kPromptLen = 4096;
constexpr int64_t kDecodeLen = 256;

// Wall-clock and process CPU seconds since construction. The development machine is shared, so
// CPU seconds are the steadier figure; MB/s use wall-clock.
class Timer {
 public:
  double wall_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_).count();
  }
  double cpu_s() const { return static_cast<double>(std::clock() - cpu_) / CLOCKS_PER_SEC; }

 private:
  std::chrono::steady_clock::time_point wall_ = std::chrono::steady_clock::now();
  std::clock_t cpu_ = std::clock();
};

Trace MakeRandomTrace() {
  TraceMeta meta;
  meta.shape = models::WithLayers(models::ShapePreset("llama-3-8b"), 4);
  meta.prompt_len = kPromptLen;
  meta.total_len = kPromptLen + kDecodeLen;
  meta.source = "bench:normal seed=1";
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t t = 0; t < meta.total_len; ++t) meta.token_ids.push_back(static_cast<int32_t>(t));
  std::vector<LayerTensors> layers(static_cast<size_t>(meta.shape.layers));
  for (LayerTensors& l : layers) {
    l.queries = HeadTensor(meta.shape.q_heads, meta.total_len, meta.shape.head_dim);
    l.keys = HeadTensor(meta.shape.kv_heads, meta.total_len, meta.shape.head_dim);
    l.values = HeadTensor(meta.shape.kv_heads, meta.total_len, meta.shape.head_dim);
    for (HeadTensor* t : {&l.queries, &l.keys, &l.values}) {
      for (size_t i = 0; i < t->size(); ++i) t->data()[i] = normal(rng);
    }
  }
  return Trace(meta, std::move(layers));
}

void Run() {
  const Trace trace = MakeRandomTrace();
  const models::ModelShape& s = trace.shape();
  const double elements = static_cast<double>((s.q_heads + 2 * s.kv_heads)) * s.layers *
                          static_cast<double>(trace.meta().total_len) * s.head_dim;
  const std::string path =
      (std::filesystem::temp_directory_path() / "kvsim_trace_io_bench.h5").string();
  fmt::print("trace: {} x {} layers, q_heads {}, kv_heads {}, head_dim {}, T = {} + {}\n", s.name,
             s.layers, s.q_heads, s.kv_heads, s.head_dim, kPromptLen, kDecodeLen);
  fmt::print(
      "MB/s are of the float32 in-memory data ({:.0f} MB); ratio = disk / raw storage bytes; "
      "open = validation pass; read = all layers; slice = one (layer, KV head)\n",
      elements * 4 / 1e6);
  fmt::print("{:>8} {:>4} {:>8} {:>6} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>9} {:>8}\n", "storage",
             "gzip", "disk_MB", "ratio", "write_s", "wr_cpu_s", "write_MB/s", "open_s", "read_s",
             "rd_cpu_s", "read_MB/s", "slice_ms");
  const double mem_mb = elements * 4 / 1e6;
  for (StorageType storage : {StorageType::kFloat16, StorageType::kFloat32}) {
    const double raw_mb = elements * (storage == StorageType::kFloat16 ? 2 : 4) / 1e6;
    for (int level : {0, 1, 4}) {
      const TraceWriterOptions options{.storage = storage, .compression_level = level};
      const Timer write;
      WriteTrace(path, trace, options);
      const double write_s = write.wall_s(), write_cpu_s = write.cpu_s();
      const Timer open;
      const TraceReader reader(path);
      const double open_s = open.wall_s();
      const Timer read;
      for (int l = 0; l < s.layers; ++l) (void)reader.ReadLayer(l);
      const double read_s = read.wall_s(), read_cpu_s = read.cpu_s();
      const Timer slice;
      (void)reader.ReadSlice(2, 3);
      const double slice_ms = slice.wall_s() * 1e3;
      const double disk_mb = static_cast<double>(reader.file_bytes()) / 1e6;
      fmt::print(
          "{:>8} {:>4} {:>8.1f} {:>6.3f} {:>8.2f} {:>8.2f} {:>9.0f} {:>7.2f} {:>7.2f} {:>7.2f} "
          "{:>9.0f} {:>8.1f}\n",
          StorageTypeName(storage), level, disk_mb, disk_mb / raw_mb, write_s, write_cpu_s,
          mem_mb / write_s, open_s, read_s, read_cpu_s, mem_mb / read_s, slice_ms);
      std::fflush(stdout);
    }
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kvsim::traces

int main() {
  kvsim::traces::Run();
  return 0;
}
