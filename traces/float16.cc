#include "traces/float16.h"

#include <bit>

#ifdef __F16C__
#include <immintrin.h>
#endif

namespace kvsim::traces::float16 {

uint16_t FromFloat(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: quiet it, keep the top of the payload
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  // 65520 is halfway between 65504 (largest half, odd mantissa) and 65536: it and everything
  // above round to infinity.
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs >= 0x38800000u) {  // >= 2^-14: a normal half
    // Adding 0xfff plus the lowest kept bit rounds the 13 dropped bits to nearest even; a carry
    // into the exponent is the correct result (next binade or, at the top, 65504 stays).
    const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));  // rebias 127 -> 15
  }
  // Subnormal half: the result counts units of 2^-24.
  const uint32_t exponent = abs >> 23;
  if (exponent < 102) return sign;  // below 2^-25, or exactly 2^-25 (a tie, to even 0)
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - exponent;  // 14..24
  uint32_t units = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t half_unit = 1u << (shift - 1);
  if (rest > half_unit || (rest == half_unit && (units & 1u))) ++units;
  return static_cast<uint16_t>(sign | units);
}

float ToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1f) {  // infinity, or NaN made quiet
    const uint32_t quiet = mantissa != 0 ? 0x400000u : 0u;
    return std::bit_cast<float>(sign | 0x7f800000u | quiet | (mantissa << 13));
  }
  if (exponent != 0)
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24 is exact in float32.
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
}

void EncodeScalar(const float* src, size_t n, uint16_t* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = FromFloat(src[i]);
}

void DecodeScalar(const uint16_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = ToFloat(src[i]);
}

#ifdef __F16C__

void Encode(const float* src, size_t n, uint16_t* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i half = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), half);
  }
  EncodeScalar(src + i, n - i, dst + i);
}

void Decode(const uint16_t* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(half));
  }
  DecodeScalar(src + i, n - i, dst + i);
}

bool UsesF16C() { return true; }

#else

void Encode(const float* src, size_t n, uint16_t* dst) { EncodeScalar(src, n, dst); }
void Decode(const uint16_t* src, size_t n, float* dst) { DecodeScalar(src, n, dst); }
bool UsesF16C() { return false; }

#endif

}  // namespace kvsim::traces::float16
