// Trace I/O speed: float16 conversion (F16C vs scalar vs Eigen::half), then size on disk and
// write/open/read speed of a trace shaped like Llama-3-8B cut to 4 layers, 4096 prompt + 256
// decode positions, N(0,1) values, for each storage dtype, gzip level and chunk length.
// Random values compress poorly (real activations have structure), so sizes are a worst case.
//
// The development machine is shared: every row prints process CPU seconds (the steady figure)
// and the 1-minute load average beside the wall-clock MB/s. MB are of the float32 in-memory
// data, so float16 and float32 rows compare the same work. Prints figures; never asserts on
// time.
#include <fmt/core.h>

#include <Eigen/Core>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "bench/bench_util.h"
#include "models/model_shape.h"
#include "traces/float16.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

constexpr int64_t kPromptLen = 4096;
constexpr int64_t kDecodeLen = 256;

using bench::LoadAverage;
using bench::Timer;

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

// float32 -> float16 -> float32 over one layer's worth of values, three implementations: the
// bulk path kvsim uses (F16C when compiled in), the portable scalar path, and the per-value
// Eigen::half loop kvsim used before.
void ConversionRows(const Trace& trace) {
  const HeadTensor& q = trace.layer(0).queries;
  const size_t n = q.size();
  const double mb = static_cast<double>(n) * 4 / 1e6;
  std::vector<uint16_t> half(n);
  std::vector<float> back(n);
  fmt::print("float16 conversion of {:.0f} MB of float32 (F16C compiled in: {})\n", mb,
             float16::UsesF16C() ? "yes" : "no");
  fmt::print("{:>12} {:>11} {:>11} {:>10} {:>10} {:>6}\n", "path", "encode_MB/s", "decode_MB/s",
             "enc_vs_eig", "dec_vs_eig", "load");
  // The volatile read keeps the compiler from dropping a conversion whose output is unused.
  volatile float keep = 0.0f;
  auto time = [&](const auto& fn) {
    const Timer timer;
    fn();
    const double seconds = timer.cpu_s() > 0 ? timer.cpu_s() : timer.wall_s();
    keep = keep + back[n / 2] + static_cast<float>(half[n / 3]);
    return seconds;
  };
  const double eigen_enc = time([&] {
    for (size_t i = 0; i < n; ++i) half[i] = Eigen::half(q.data()[i]).x;
  });
  const double eigen_dec = time([&] {
    for (size_t i = 0; i < n; ++i) {
      back[i] = static_cast<float>(Eigen::half(Eigen::half_impl::raw_uint16_to_half(half[i])));
    }
  });
  const double scalar_enc = time([&] { float16::EncodeScalar(q.data(), n, half.data()); });
  const double scalar_dec = time([&] { float16::DecodeScalar(half.data(), n, back.data()); });
  const double bulk_enc = time([&] { float16::Encode(q.data(), n, half.data()); });
  const double bulk_dec = time([&] { float16::Decode(half.data(), n, back.data()); });
  for (const auto& [name, enc, dec] :
       {std::tuple{"eigen::half", eigen_enc, eigen_dec},
        std::tuple{"scalar", scalar_enc, scalar_dec}, std::tuple{"bulk", bulk_enc, bulk_dec}}) {
    fmt::print("{:>12} {:>11.0f} {:>11.0f} {:>10.2f} {:>10.2f} {:>6.2f}\n", name, mb / enc,
               mb / dec, eigen_enc / enc, eigen_dec / dec, LoadAverage());
  }
  fmt::print(
      "(MB/s per CPU second, one thread; *_vs_eig = speed-up over the Eigen::half loop)\n\n");
}

void Run() {
  const Trace trace = MakeRandomTrace();
  ConversionRows(trace);
  const models::ModelShape& s = trace.shape();
  const double elements = static_cast<double>((s.q_heads + 2 * s.kv_heads)) * s.layers *
                          static_cast<double>(trace.meta().total_len) * s.head_dim;
  const std::string path =
      (std::filesystem::temp_directory_path() / "kvsim_trace_io_bench.h5").string();
  const double mem_mb = elements * 4 / 1e6;
  fmt::print("trace: {} x {} layers, q_heads {}, kv_heads {}, head_dim {}, T = {} + {}\n", s.name,
             s.layers, s.q_heads, s.kv_heads, s.head_dim, kPromptLen, kDecodeLen);
  fmt::print(
      "MB/s are of the float32 in-memory data ({:.0f} MB), wall-clock (MBs) and per CPU second "
      "(MBc, "
      "the per-core figure); ratio = "
      "disk / raw storage bytes; open = validation pass (reads everything once); read = all "
      "layers into fresh buffers; rr = the same into reused buffers (no page faults); slice = one "
      "(layer, KV head); wr_x / rd_x = write / read CPU time relative to the float16 no-filter "
      "row\n",
      mem_mb);
  fmt::print(
      "{:>7} {:>4} {:>5} {:>7} {:>5} {:>6} {:>6} {:>6} {:>6} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} "
      "{:>6} {:>5} {:>6} {:>6} {:>6} {:>6} {:>5}\n",
      "storage", "gzip", "chunk", "disk_MB", "ratio", "wr_s", "wr_cpu", "wr_MBs", "wr_MBc", "wr_x",
      "open_s", "op_cpu", "rd_s", "rd_cpu", "rd_MBs", "rd_MBc", "rd_x", "rr_cpu", "rr_MBs",
      "rr_MBc", "slc_ms", "load");
  double base_write_cpu = 0.0, base_read_cpu = 0.0;
  for (StorageType storage : {StorageType::kFloat16, StorageType::kFloat32}) {
    const double raw_mb = elements * (storage == StorageType::kFloat16 ? 2 : 4) / 1e6;
    for (const auto& [level, chunk] :
         {std::pair{0, 256}, std::pair{0, 1024}, std::pair{1, 256}, std::pair{4, 256}}) {
      const TraceWriterOptions options{
          .storage = storage, .chunk_positions = chunk, .compression_level = level};
      const Timer write;
      WriteTrace(path, trace, options);
      const double write_s = write.wall_s(), write_cpu = write.cpu_s();
      const Timer open;
      const TraceReader reader(path);
      const double open_s = open.wall_s(), open_cpu = open.cpu_s();
      const Timer read;
      for (int l = 0; l < s.layers; ++l) (void)reader.ReadLayer(l);
      const double read_s = read.wall_s(), read_cpu = read.cpu_s();
      LayerTensors reused;
      reader.ReadLayer(0, &reused);
      const Timer reread;
      for (int l = 0; l < s.layers; ++l) reader.ReadLayer(l, &reused);
      const double reread_s = reread.wall_s(), reread_cpu = reread.cpu_s();
      const Timer slice;
      (void)reader.ReadSlice(2, 3);
      const double slice_ms = slice.wall_s() * 1e3;
      const double disk_mb = static_cast<double>(reader.file_bytes()) / 1e6;
      if (base_write_cpu == 0.0) {
        base_write_cpu = write_cpu;
        base_read_cpu = read_cpu;
      }
      fmt::print(
          "{:>7} {:>4} {:>5} {:>7.1f} {:>5.3f} {:>6.2f} {:>6.2f} {:>6.0f} {:>6.0f} {:>5.1f} "
          "{:>6.2f} {:>6.2f} {:>6.2f} {:>6.2f} {:>6.0f} {:>6.0f} {:>5.1f} {:>6.2f} {:>6.0f} "
          "{:>6.0f} "
          "{:>6.1f} {:>5.2f}\n",
          StorageTypeName(storage), level, chunk, disk_mb, disk_mb / raw_mb, write_s, write_cpu,
          mem_mb / write_s, mem_mb / write_cpu, write_cpu / base_write_cpu, open_s, open_cpu,
          read_s, read_cpu, mem_mb / read_s, mem_mb / read_cpu, read_cpu / base_read_cpu,
          reread_cpu, mem_mb / reread_s, mem_mb / reread_cpu, slice_ms, LoadAverage());
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
