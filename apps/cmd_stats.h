#pragma once
// The prompt-statistics sidecar driver shared by `kvsim stats` and the commands that write a
// trace and its sidecar in one go (`kvsim synth`, `kvsim capture`).
#include <string>

namespace kvsim::apps {

struct PromptStatsUpdate {
  std::string sidecar;  // traces::PromptStatsPath(trace)
  int layers = 0;
  int computed = 0;      // layers whose column sums were computed
  int reused = 0;        // layers taken from the existing, current sidecar
  bool written = false;  // false: the sidecar was already up to date and is left as it was
  double seconds = 0.0;
};

// Brings the sidecar of `trace` up to date, one layer at a time (traces::TraceReader::
// ReadLayer): a layer whose stored statistics match the trace is reused, any other is computed
// (sim::ComputeColumnSums); `force` computes every layer without reading the old sidecar. The
// sidecar is rewritten atomically only if a layer was computed. `per_layer` prints one line per
// layer on stdout; a progress bar is drawn on stderr when it is a terminal. Throws InputError
// for a bad trace or a corrupt sidecar (without `force`).
PromptStatsUpdate UpdatePromptStats(const std::string& trace, bool force, bool per_layer);

}  // namespace kvsim::apps
