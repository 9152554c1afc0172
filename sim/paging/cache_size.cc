#include "sim/paging/cache_size.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "common/error.h"

namespace kvsim::paging {
namespace {

bool EndsWithNoCase(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size()) return false;
  return std::equal(suffix.begin(), suffix.end(),
                    text.end() - static_cast<ptrdiff_t>(suffix.size()),
                    [](char a, char b) { return std::tolower(a) == std::tolower(b); });
}

template <typename Number>
bool ParseWhole(std::string_view token, Number& value) {
  if (token.empty()) return false;
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(token.data(), end, value);
  return ec == std::errc() && ptr == end;
}

}  // namespace

CacheSizeSpec ParseCacheSize(std::string_view text, std::string_view flag) {
  CacheSizeSpec spec;
  spec.text = std::string(text);
  auto fail = [&]() {
    ThrowInputError(
        "{} '{}': expected pages (100), a fraction of the distinct pages (0.1f or 0.1) or "
        "bytes (4096B, 64KiB, 1MiB, 2GiB; KB/MB/GB are 1024-based as in libCacheSim)",
        flag, text);
  };
  // A fraction: a trailing f, or a '.' (libCacheSim's cachesim takes any size with a '.' as a
  // fraction of the working set, truncated: conv_cache_sizes in bin/cachesim/cli_parser.c).
  const bool f_suffix = text.size() > 1 && (text.back() == 'f' || text.back() == 'F');
  if (f_suffix || text.find('.') != std::string_view::npos) {
    spec.kind = CacheSizeSpec::Kind::kFraction;
    if (!ParseWhole(f_suffix ? text.substr(0, text.size() - 1) : text, spec.fraction) ||
        !(spec.fraction >= 0) || !std::isfinite(spec.fraction)) {
      fail();
    }
    return spec;
  }
  static constexpr std::pair<std::string_view, int64_t> kUnits[] = {{"KiB", int64_t{1} << 10},
                                                                    {"MiB", int64_t{1} << 20},
                                                                    {"GiB", int64_t{1} << 30},
                                                                    {"KB", int64_t{1} << 10},
                                                                    {"MB", int64_t{1} << 20},
                                                                    {"GB", int64_t{1} << 30},
                                                                    {"B", 1}};
  for (const auto& [unit, scale] : kUnits) {
    if (!EndsWithNoCase(text, unit)) continue;
    int64_t count = 0;
    if (!ParseWhole(text.substr(0, text.size() - unit.size()), count) || count < 0 ||
        count > std::numeric_limits<int64_t>::max() / scale) {
      fail();
    }
    spec.kind = CacheSizeSpec::Kind::kBytes;
    spec.value = count * scale;
    return spec;
  }
  if (!ParseWhole(text, spec.value) || spec.value < 0) fail();
  return spec;
}

int64_t DistinctPages(const RequestSequence& seq) {
  std::unordered_set<uint64_t> pages(seq.pages.begin(), seq.pages.end());
  return static_cast<int64_t>(pages.size());
}

int64_t ResolveCacheSize(const CacheSizeSpec& spec, const RequestSequence& seq) {
  switch (spec.kind) {
    case CacheSizeSpec::Kind::kPages:
      return spec.value;
    case CacheSizeSpec::Kind::kFraction:
      return static_cast<int64_t>(
          std::floor(spec.fraction * static_cast<double>(DistinctPages(seq))));
    case CacheSizeSpec::Kind::kBytes:
      if (seq.page_bytes <= 0) {
        ThrowInputError(
            "--cache-sizes '{}': stream '{}' has no page size (page_bytes 0, e.g. a txt input), "
            "so a size in bytes cannot be turned into pages; give pages or a fraction",
            spec.text, seq.stream);
      }
      return spec.value / seq.page_bytes;
  }
  return 0;
}

}  // namespace kvsim::paging
