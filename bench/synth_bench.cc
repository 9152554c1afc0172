// Speed of synthetic traces (`kvsim synth`): generation alone per scenario for a Llama-3-8B
// shape cut to 4 layers, 4096 prompt + 256 decode positions (the size later experiments use),
// on 1 thread and on all of them; then generation streamed to a float16 file layer by layer, as
// `kvsim synth` does, for one layer of 8192 + 512 positions.
//
// Every row prints process CPU seconds (steady on a shared machine) and the 1-minute load
// average beside wall-clock seconds; speed-up = 1-thread wall / N-thread wall, measured in the
// same run. Prints figures; never asserts on time.
#include <fmt/core.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "bench/bench_util.h"
#include "models/model_shape.h"
#include "traces/synthetic/synthetic.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

using bench::LoadAverage;
using bench::Timer;

void Run() {
  namespace synthetic = traces::synthetic;
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const auto shape4 = models::WithLayers(models::ShapePreset("llama-3-8b"), 4);
  fmt::print("generation, llama-3-8b x4 layers, 4096+256 positions, 1 vs {} threads\n", threads);
  fmt::print("{:>16} {:>7} {:>7} {:>7} {:>7} {:>8} {:>5}\n", "scenario", "1t_s", "1t_cpu", "Nt_s",
             "Nt_cpu", "speed-up", "load");
  for (const std::string& name : synthetic::ScenarioNames()) {
    synthetic::SynthParams params = synthetic::ScenarioParams(synthetic::ParseScenario(name));
    params.prompt_len = 4096;
    params.decode_len = 256;
    const Timer one;
    (void)synthetic::GenerateSynthetic(shape4, params, 1);
    const double one_s = one.wall_s(), one_cpu = one.cpu_s();
    const Timer many;
    (void)synthetic::GenerateSynthetic(shape4, params, threads);
    const double many_s = many.wall_s(), many_cpu = many.cpu_s();
    fmt::print("{:>16} {:>7.2f} {:>7.2f} {:>7.2f} {:>7.2f} {:>8.2f} {:>5.2f}\n", name, one_s,
               one_cpu, many_s, many_cpu, one_s / many_s, LoadAverage());
    std::fflush(stdout);
  }

  // What `kvsim synth --shape llama-3-8b --layers 1 --prompt 8192 --decode 512` does.
  const auto shape1 = models::WithLayers(models::ShapePreset("llama-3-8b"), 1);
  synthetic::SynthParams params = synthetic::ScenarioParams(synthetic::Scenario::kMixed);
  params.prompt_len = 8192;
  params.decode_len = 512;
  const std::string path =
      (std::filesystem::temp_directory_path() / "kvsim_synth_bench.h5").string();
  fmt::print("\nsynth to file, llama-3-8b x1 layer, 8192+512 positions, mixed, {} threads\n",
             threads);
  fmt::print("{:>8} {:>4} {:>7} {:>7} {:>7} {:>5}\n", "storage", "gzip", "disk_MB", "wall_s",
             "cpu_s", "load");
  for (const auto& [storage, level] :
       {std::pair{StorageType::kFloat16, 0}, std::pair{StorageType::kFloat16, 1},
        std::pair{StorageType::kFloat32, 0}}) {
    const Timer timer;
    const synthetic::SynthGenerator generator(shape1, params, threads);
    WriteTraceByLayer(path, generator.meta(),
                      [&](int l, LayerTensors& out) { generator.Layer(l, &out); },
                      {.storage = storage, .compression_level = level});
    const double wall = timer.wall_s(), cpu = timer.cpu_s();
    fmt::print("{:>8} {:>4} {:>7.1f} {:>7.2f} {:>7.2f} {:>5.2f}\n", StorageTypeName(storage), level,
               static_cast<double>(std::filesystem::file_size(path)) / 1e6, wall, cpu,
               LoadAverage());
    std::fflush(stdout);
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kvsim::traces

int main() {
  kvsim::traces::Run();
  return 0;
}
