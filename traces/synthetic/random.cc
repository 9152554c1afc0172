#include "traces/synthetic/random.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numbers>

namespace kvsim::traces::synthetic {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

}  // namespace

uint64_t SplitMix64(uint64_t x) {
  x += kGolden;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t StreamKey(uint64_t seed, std::initializer_list<uint64_t> parts) {
  uint64_t key = SplitMix64(seed);
  for (uint64_t part : parts) key = SplitMix64(key ^ SplitMix64(part));
  return key;
}

void FillGaussian(uint64_t key, uint64_t first, size_t n, float scale, float* out) {
  // Sample 2p is r cos(angle), 2p + 1 is r sin(angle), both from the 64-bit hash of pair p. A
  // batch always computes whole pairs in every lane, so a sample does not depend on where a
  // fill starts or ends.
  constexpr int kPairs = 16;
  using Batch = Eigen::Array<float, kPairs, 1>;
  const uint64_t end = first + n;
  for (uint64_t pair = first / 2; 2 * pair < end; pair += kPairs) {
    Batch u1, u2;
    for (int j = 0; j < kPairs; ++j) {
      const uint64_t bits = SplitMix64(key + (pair + static_cast<uint64_t>(j)) * kGolden);
      u1[j] = (static_cast<float>(bits >> 40) + 0.5f) * 0x1p-24f;  // (0, 1): log is finite
      u2[j] = static_cast<float>(bits & 0xffffffULL) * 0x1p-24f;   // [0, 1)
    }
    const Batch radius = (u1.log() * -2.0f).sqrt() * scale;
    const Batch angle = u2 * (2.0f * std::numbers::pi_v<float>);
    const Batch cos = radius * angle.cos();
    const Batch sin = radius * angle.sin();
    const uint64_t lo = std::max(first, 2 * pair);
    const uint64_t hi = std::min(end, 2 * (pair + kPairs));
    for (uint64_t i = lo; i < hi; ++i) {
      const auto lane = static_cast<Eigen::Index>(i / 2 - pair);
      out[i - first] = (i % 2 == 0) ? cos[lane] : sin[lane];
    }
  }
}

int64_t Rng::Index(int64_t n) {
  return std::min(n - 1, static_cast<int64_t>(Uniform() * static_cast<double>(n)));
}

double Rng::Gaussian() {
  const double u1 = (static_cast<double>(engine_() >> 11) + 0.5) * 0x1.0p-53;
  const double u2 = Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

void Rng::FillGaussian(float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 2) {
    const uint64_t x = engine_();
    const float u1 = (static_cast<float>(x >> 40) + 0.5f) * 0x1.0p-24f;
    const float u2 = static_cast<float>(x & 0xffffffULL) * 0x1.0p-24f;
    const float r = std::sqrt(-2.0f * std::log(u1));
    const float angle = 2.0f * std::numbers::pi_v<float> * u2;
    out[i] = r * std::cos(angle);
    if (i + 1 < n) out[i + 1] = r * std::sin(angle);
  }
}

}  // namespace kvsim::traces::synthetic
