#pragma once
// Conversions between float32 and IEEE 754 binary16 (float16), the storage type of most
// traces. Round-to-nearest-even, like numpy's astype(np.float16) and the F16C instructions.
//
// The bulk functions use F16C (8 values per instruction) when the compiler targets it
// (__F16C__, e.g. -march=native on x86-64 since Ivy Bridge) and a portable scalar path
// otherwise. Both give identical bits for every input, NaN payloads included (checked on all
// 2^16 halves and on every float32 rounding boundary in tests/traces/float16_test.cc), so a
// trace does not depend on the machine that wrote it.
#include <cstddef>
#include <cstdint>

namespace kvsim::traces::float16 {

// One value, portable scalar code. Overflow (|x| >= 65520) gives +-infinity; a NaN stays a
// NaN with the quiet bit set and the top 9 payload bits kept, as F16C does.
uint16_t FromFloat(float x);
// Exact (every half is a float32); a signalling NaN comes back quiet, as F16C does.
float ToFloat(uint16_t half);

// n values; src and dst must not overlap. Encode: float32 -> float16; Decode: float16 ->
// float32.
void Encode(const float* src, size_t n, uint16_t* dst);
void Decode(const uint16_t* src, size_t n, float* dst);

// The portable paths of Encode/Decode, always compiled, so tests can compare them with the
// F16C ones.
void EncodeScalar(const float* src, size_t n, uint16_t* dst);
void DecodeScalar(const uint16_t* src, size_t n, float* dst);

// True if Encode/Decode use F16C in this build.
bool UsesF16C();

// True if the half `bits` is neither an infinity nor a NaN (exponent field not all ones), so
// a stored trace can be checked without decoding.
inline bool IsFinite(uint16_t bits) { return (bits & 0x7c00u) != 0x7c00u; }

}  // namespace kvsim::traces::float16
