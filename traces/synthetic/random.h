#pragma once
// Random numbers for synthetic traces, private to traces/synthetic. Two kinds:
//  - Rng, a sequential generator for the few draws whose order is fixed (layout, per-head
//    factors, rotations);
//  - counter-based streams for the bulk noise: sample i of stream `key` is a pure function of
//    (key, i), so tensors can be filled in any partition, on any number of threads, and give
//    the same bits.
// Portable distribution math throughout: libstdc++'s distributions are not specified bit for
// bit across library versions.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <random>

namespace kvsim::traces::synthetic {

uint64_t SplitMix64(uint64_t x);

// Key of an independent stream: `seed` mixed with each of `parts` (layer, head, purpose, ...).
uint64_t StreamKey(uint64_t seed, std::initializer_list<uint64_t> parts);

// Writes scale * N(0, 1) samples first, first + 1, ..., first + n - 1 of stream `key` to out.
// Box-Muller on pairs, vectorized (Eigen's packet log/sqrt/sin/cos, 16 pairs per batch).
void FillGaussian(uint64_t key, uint64_t first, size_t n, float scale, float* out);

// mt19937_64 with portable distribution math.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  int64_t Index(int64_t n);
  double Gaussian();
  // n samples of N(0, 1) (scalar Box-Muller; for small matrices).
  void FillGaussian(float* out, int64_t n);

 private:
  std::mt19937_64 engine_;
};

}  // namespace kvsim::traces::synthetic
