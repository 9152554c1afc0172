// float32 <-> float16 conversion: the F16C and scalar paths agree bit for bit, and both round
// to nearest even as IEEE 754 (and numpy's astype(np.float16)) do.
#include "traces/float16.h"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kvsim::traces::float16 {
namespace {

uint32_t Bits(float x) { return std::bit_cast<uint32_t>(x); }
float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }

std::vector<uint16_t> AllHalves() {
  std::vector<uint16_t> halves(65536);
  for (uint32_t h = 0; h < 65536; ++h) halves[h] = static_cast<uint16_t>(h);
  return halves;
}

// Floats on and around every rounding decision: each half's value, the exact midpoint to the
// next half (a tie) and one float32 ulp either side of it, over both signs; plus zeros,
// float32 subnormals, the overflow threshold, infinities, NaNs with payloads and FLT_MAX.
std::vector<float> EdgeCases() {
  std::vector<float> out;
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite non-negative half
    const float lo = ToFloat(static_cast<uint16_t>(h));
    // The next half up; past 65504 the "next" value is 65536, where infinity starts.
    const float hi = h + 1 < 0x7c00 ? ToFloat(static_cast<uint16_t>(h + 1)) : 65536.0f;
    const float mid = lo + (hi - lo) / 2;  // exact: both sides are float32 with room to spare
    for (float x : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, hi)}) {
      out.push_back(x);
      out.push_back(-x);
    }
  }
  for (uint32_t bits :
       {0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x33000000u, 0x33000001u, 0x32ffffffu,
        0x477fefffu, 0x477ff000u, 0x477fffffu, 0x47800000u, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
        0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0xffa02000u, 0x7fffe000u}) {
    out.push_back(FromBits(bits));
  }
  // Pseudo-random bit patterns (SplitMix64), NaNs included.
  uint64_t state = 1;
  for (int i = 0; i < 1 << 20; ++i) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    out.push_back(FromBits(static_cast<uint32_t>(z ^ (z >> 31))));
  }
  return out;
}

TEST(Float16, DecodePathsAgreeOnAllHalves) {
  const std::vector<uint16_t> halves = AllHalves();
  std::vector<float> fast(halves.size()), scalar(halves.size());
  Decode(halves.data(), halves.size(), fast.data());
  DecodeScalar(halves.data(), halves.size(), scalar.data());
  for (size_t i = 0; i < halves.size(); ++i) {
    ASSERT_EQ(Bits(fast[i]), Bits(scalar[i]))
        << std::hex << "half 0x" << halves[i] << (UsesF16C() ? " (F16C vs scalar)" : "");
  }
}

TEST(Float16, DecodeIsExact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto half = static_cast<uint16_t>(h);
    const float x = ToFloat(half);
    if (!IsFinite(half)) {
      ASSERT_FALSE(std::isfinite(x)) << std::hex << h;
      ASSERT_EQ(std::isnan(x), (h & 0x3ffu) != 0) << std::hex << h;
      continue;
    }
    const Eigen::half reference = Eigen::half_impl::raw_uint16_to_half(half);
    ASSERT_EQ(Bits(x), Bits(static_cast<float>(reference))) << std::hex << h;
  }
}

TEST(Float16, EncodePathsAgreeOnEdgeCases) {
  const std::vector<float> floats = EdgeCases();
  std::vector<uint16_t> fast(floats.size()), scalar(floats.size());
  Encode(floats.data(), floats.size(), fast.data());
  EncodeScalar(floats.data(), floats.size(), scalar.data());
  for (size_t i = 0; i < floats.size(); ++i) {
    ASSERT_EQ(fast[i], scalar[i]) << std::hex << "float bits 0x" << Bits(floats[i])
                                  << (UsesF16C() ? " (F16C vs scalar)" : "");
  }
}

// Eigen::half's conversion is an independent implementation of the same rounding.
TEST(Float16, EncodeRoundsToNearestEvenLikeEigen) {
  for (float x : EdgeCases()) {
    if (std::isnan(x)) {
      EXPECT_FALSE(IsFinite(FromFloat(x)));
      EXPECT_NE(FromFloat(x) & 0x3ffu, 0u) << "NaN must stay NaN, bits 0x" << std::hex << Bits(x);
      continue;
    }
    ASSERT_EQ(FromFloat(x), Eigen::half(x).x) << std::hex << "float bits 0x" << Bits(x);
  }
}

TEST(Float16, KnownValues) {
  EXPECT_EQ(FromFloat(1.0f), 0x3c00);
  EXPECT_EQ(FromFloat(-2.0f), 0xc000);
  EXPECT_EQ(FromFloat(-0.0f), 0x8000);
  EXPECT_EQ(FromFloat(65504.0f), 0x7bff);             // largest half
  EXPECT_EQ(FromFloat(65519.996f), 0x7bff);           // just below the tie
  EXPECT_EQ(FromFloat(65520.0f), 0x7c00);             // tie rounds to even: infinity
  EXPECT_EQ(FromFloat(0x1p-24f), 0x0001);             // smallest subnormal
  EXPECT_EQ(FromFloat(0x1p-25f), 0x0000);             // tie with zero: even
  EXPECT_EQ(FromFloat(0x1.000002p-25f), 0x0001);      // just above the tie
  EXPECT_EQ(FromFloat(0x1.8p-24f), 0x0002);           // 1.5 units: tie to even 2
  EXPECT_EQ(FromFloat(1.0f + 0x1p-11f), 0x3c00);      // tie to even mantissa 0
  EXPECT_EQ(FromFloat(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie to even mantissa 2
  EXPECT_EQ(FromFloat(0x1.ff8p-15f), 0x03ff);         // largest subnormal
  EXPECT_EQ(FromFloat(0x1.ffcp-15f), 0x0400);         // tie: to the smallest normal (even)
  EXPECT_EQ(FromFloat(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FromFloat(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(FromFloat(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(ToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(ToFloat(0x8000), -0.0f);
  EXPECT_TRUE(std::signbit(ToFloat(0x8000)));
}

TEST(Float16, EncodeThenDecodeIsIdentityOnFiniteHalves) {
  const std::vector<uint16_t> halves = AllHalves();
  std::vector<float> floats(halves.size());
  std::vector<uint16_t> back(halves.size());
  Decode(halves.data(), halves.size(), floats.data());
  Encode(floats.data(), floats.size(), back.data());
  for (size_t i = 0; i < halves.size(); ++i) {
    if (!IsFinite(halves[i])) continue;
    ASSERT_EQ(back[i], halves[i]) << std::hex << halves[i];
  }
}

// The vector paths work 8 values at a time; every length must handle its tail.
TEST(Float16, EveryLengthConvertsEveryElement) {
  for (size_t n = 0; n <= 40; ++n) {
    std::vector<float> src(n);
    for (size_t i = 0; i < n; ++i) src[i] = 0.1f * static_cast<float>(i) - 1.3f;
    std::vector<uint16_t> half(n + 1, 0xabcd);
    Encode(src.data(), n, half.data());
    std::vector<float> back(n + 1, 42.0f);
    Decode(half.data(), n, back.data());
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(half[i], FromFloat(src[i])) << "n " << n << " i " << i;
      EXPECT_EQ(back[i], ToFloat(half[i])) << "n " << n << " i " << i;
    }
    EXPECT_EQ(half[n], 0xabcd) << "wrote past the end, n " << n;
    EXPECT_EQ(back[n], 42.0f) << "wrote past the end, n " << n;
  }
}

}  // namespace
}  // namespace kvsim::traces::float16
