#pragma once
// XXH64 (xxHash, Yann Collet) of the 8 little-endian bytes of a 64-bit key: the reference
// algorithm's path for an 8-byte input, which is what libCacheSim hashes object ids with
// (XXH64(&obj_id, sizeof(obj_id_t), seed), e.g. in dataStructure/minimalIncrementCBF.c).
#include <cstdint>

namespace kvsim::paging {

constexpr uint64_t Xxh64OfUint64(uint64_t key, uint64_t seed) {
  constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
  constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
  constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
  constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
  constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;
  auto rotl = [](uint64_t x, int r) { return (x << r) | (x >> (64 - r)); };
  uint64_t h = seed + kPrime5 + 8;
  h ^= rotl(key * kPrime2, 31) * kPrime1;
  h = rotl(h, 27) * kPrime1 + kPrime4;
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

}  // namespace kvsim::paging
