#pragma once
// Cache sizes as `kvsim paging --cache-sizes` takes them (sim/paging/README.md): pages (`100`), a
// fraction of the stream's footprint (`0.1f` or `0.1` = 10% of its distinct pages, truncated;
// libCacheSim takes any size with a '.' as such a fraction) or bytes (`64KiB`, `1MiB`, `4096B`;
// KB/MB/GB are 1024-based as in libCacheSim), turned into pages per stream with the stream's
// page_bytes.
#include <cstdint>
#include <string>
#include <string_view>

#include "sim/paging/request_sequence.h"

namespace kvsim::paging {

struct CacheSizeSpec {
  enum class Kind { kPages, kFraction, kBytes };
  Kind kind = Kind::kPages;
  int64_t value = 0;      // kPages: pages; kBytes: bytes
  double fraction = 0.0;  // kFraction, >= 0 (above 1: more slots than distinct pages)
  std::string text;       // as given
};

// Throws InputError naming `flag` and the accepted spellings.
CacheSizeSpec ParseCacheSize(std::string_view text, std::string_view flag);
// Pages for `seq`: pages as given; floor(fraction * distinct pages); floor(bytes / page_bytes).
// Throws InputError for bytes on a stream without a page size (page_bytes 0).
int64_t ResolveCacheSize(const CacheSizeSpec& spec, const RequestSequence& seq);
// Distinct pages requested in `seq`.
int64_t DistinctPages(const RequestSequence& seq);

}  // namespace kvsim::paging
