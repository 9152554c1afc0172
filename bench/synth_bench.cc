// Generation time of synthetic traces (`kvsim synth`) for a Llama-3-8B shape cut to 4 layers,
// 4096 prompt + 256 decode positions: the size the later experiments use.
#include <fmt/core.h>

#include <chrono>

#include "models/model_shape.h"
#include "traces/synthetic/synthetic.h"

int main() {
  namespace synthetic = kvsim::traces::synthetic;
  const auto shape = kvsim::models::WithLayers(kvsim::models::ShapePreset("llama-3-8b"), 4);
  for (const std::string& name : synthetic::ScenarioNames()) {
    synthetic::SynthParams params = synthetic::ScenarioParams(synthetic::ParseScenario(name));
    params.prompt_len = 4096;
    params.decode_len = 256;
    const auto start = std::chrono::steady_clock::now();
    const synthetic::SynthTrace result = synthetic::GenerateSynthetic(shape, params);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("synth {:16s} llama-3-8b x4 layers, 4096+256 positions: {:.2f} s\n", name, seconds);
  }
  return 0;
}
